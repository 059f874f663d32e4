# The node image for the k8s backend (and a base for Modal's image): CUDA torch plus launcher with the train extras.
# Not built in CI (no Docker engine there); the local backend needs no image.
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime
WORKDIR /opt/launcher
COPY pyproject.toml README.md ./
COPY launcher ./launcher
RUN pip install --no-cache-dir -e ".[aws,train]"
# The job's code arrives as a snapshot at run time; the agent is the entrypoint on every backend.
ENTRYPOINT ["python", "-m", "launcher.agent"]
