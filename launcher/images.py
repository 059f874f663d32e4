"""The node image, from one lock: `images/requirements.lock` feeds the Dockerfile (k8s, EC2 when an image is
used), the Modal image and the venv the node bootstrap builds when no image is used. The image tag is the lock's
hash, so a tag names exactly one set of dependencies."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

IMAGES_DIR = Path(__file__).resolve().parent.parent / "images"
LOCK_FILE = IMAGES_DIR / "requirements.lock"
# One CUDA + Python base for the Dockerfile and the Modal image.
CUDA_BASE = "nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04"
PYTHON_VERSION = "3.11"
# Where `launch image build --push` puts it unless told otherwise; k8s uses it as the default --image.
DEFAULT_REPO = "ghcr.io/launcher-ml/node"


def lock_hash(lock: Path = LOCK_FILE) -> str:
    """First 12 hex digits of the lock's sha256: the image tag."""
    return hashlib.sha256(lock.read_bytes()).hexdigest()[:12]


def default_image() -> str:
    return f"{os.environ.get('LAUNCH_IMAGE_REPO', DEFAULT_REPO)}:{lock_hash()}"
