"""`launch check --backend k8s`: the kubernetes client, a kubeconfig context (or in-cluster credentials), the
namespace, and the API server letting us list Jobs there. Read-only, bounded by netpolicy's K8S timeouts."""
from __future__ import annotations

from ..access import attempt, library
from ..base import Check


def checks(options=None) -> list[Check]:
    out = [library("kubernetes", "kubernetes")]
    if not out[0].ok:
        return out
    from .kube import Kube
    from .options import K8sOptions

    opts = options or K8sOptions()
    box: dict = {}

    def context() -> str:
        name = opts.context or Kube.current_context()
        box["kube"] = Kube(name)
        box["context"] = name
        return f"{name} at {box['kube'].host}" if name else f"in-cluster credentials at {box['kube'].host}"

    out.append(attempt("context", context))
    if "kube" not in box:
        return out

    def namespace() -> str:
        box["ns"] = opts.namespace or Kube.namespace_of_context(box["context"])
        return box["ns"] + ("" if opts.namespace else " (the context's; --namespace for another)")

    out.append(attempt("namespace", namespace))
    if "ns" not in box:
        return out

    def api() -> str:
        box["kube"].check_access(box["ns"])
        return f"can list Jobs in namespace {box['ns']}"

    out.append(attempt("API server", api))
    return out


def gpu_offers(options=None) -> list:
    """The node label value per GPU, for the label key the options name (GPU feature discovery's by default); the
    cluster's nodes decide counts and prices."""
    from ..base import GpuOffer
    from .options import K8sOptions
    from .request import GPU_LABEL_VALUES

    key = (options or K8sOptions()).gpu_label_key
    return [GpuOffer(gpu, value) for gpu, value in GPU_LABEL_VALUES.get(key, {}).items()]
