"""The node image on Modal: the CUDA + Python base every image uses, with images/requirements.lock installed, and
for GPU jobs the gpu extra's lock on top (images/README.md), as images/Dockerfile does.

Built offline (a `modal.Image` is only a recipe until a function using it is created); the same lock feeds
images/Dockerfile and the bootstrap's venv, and its hash names the image (LAUNCH_IMAGE_LOCK inside it).
"""
from __future__ import annotations


def node_image(gpu: bool = False, spec: dict | None = None):
    """The Modal image of the node: `modal.Image`, from launcher.images.LOCK_FILE (+ GPU_LOCK_FILE with `gpu`).
    `spec`: a request's `image` part (request.image_spec), built as it says."""
    import modal

    from ...images import IMAGES_DIR
    from .request import image_for

    spec = spec or image_for(gpu)
    image = modal.Image.from_registry(spec["base"], add_python=spec["python"])
    for lock in spec["requirements"]:  # relative to the repository root
        image = image.pip_install_from_requirements(str(IMAGES_DIR.parent / lock))
    return image.env({"LAUNCH_IMAGE_LOCK": spec["lock_hash"]})
