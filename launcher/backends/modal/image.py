"""The node image on Modal: the CUDA + Python base every image uses, with images/requirements.lock installed, and
for GPU jobs the gpu extra's lock on top (images/README.md), as images/Dockerfile does.

Built offline (a `modal.Image` is only a recipe until a function using it is created); the same lock feeds
images/Dockerfile and the bootstrap's venv, and its hash names the image (LAUNCH_IMAGE_LOCK inside it).
"""
from __future__ import annotations


def node_image(gpu: bool = False):
    """The Modal image of the node: `modal.Image`, from launcher.images.LOCK_FILE (+ GPU_LOCK_FILE with `gpu`)."""
    import modal

    from ...images import CUDA_BASE, GPU_LOCK_FILE, LOCK_FILE, PYTHON_VERSION, lock_hash

    image = modal.Image.from_registry(CUDA_BASE, add_python=PYTHON_VERSION).pip_install_from_requirements(str(LOCK_FILE))
    if gpu and GPU_LOCK_FILE.is_file():
        image = image.pip_install_from_requirements(str(GPU_LOCK_FILE))
    return image.env({"LAUNCH_IMAGE_LOCK": lock_hash()})
