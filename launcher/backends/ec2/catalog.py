"""Instance type, AMI and price for a job. Prices are on-demand list prices, us-east-1, as of PRICE_TABLE_DATE."""
from __future__ import annotations

from ...errors import UserError
from ...gpus import GpuRequest
from ...job import Job

# The public parameters AWS keeps pointing at the newest image: the Deep Learning Base OSS Nvidia Driver GPU AMI
# (drivers and CUDA, Ubuntu 22.04) for GPU types, plain Ubuntu 22.04 for CPU ones.
GPU_AMI_PARAMETER = "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id"
CPU_AMI_PARAMETER = "/aws/service/canonical/ubuntu/server/22.04/stable/current/amd64/hvm/ebs-gp2/ami-id"

PRICE_TABLE_DATE = "2025-10-01"

# GPU jobs: the instance type with that many GPUs, per catalog GPU (launcher/gpus.py); a type with no row is not
# offered on EC2.
GPU_INSTANCES: dict[str, dict[int, str]] = {
    "T4": {1: "g4dn.xlarge", 4: "g4dn.12xlarge", 8: "g4dn.metal"},
    "L4": {1: "g6.xlarge", 4: "g6.12xlarge", 8: "g6.48xlarge"},
    "A10G": {1: "g5.xlarge", 4: "g5.12xlarge", 8: "g5.48xlarge"},
    "L40S": {1: "g6e.xlarge", 4: "g6e.12xlarge", 8: "g6e.48xlarge"},
    "A100-40GB": {8: "p4d.24xlarge"},
    "A100-80GB": {8: "p4de.24xlarge"},
    "H100": {1: "p5.4xlarge", 8: "p5.48xlarge"},
    "H200": {8: "p5e.48xlarge"},
}
GPU_USD_PER_HOUR = {
    "g4dn.xlarge": 0.526, "g4dn.12xlarge": 3.912, "g4dn.metal": 7.824,
    "g6.xlarge": 0.805, "g6.12xlarge": 4.602, "g6.48xlarge": 13.35,
    "g5.xlarge": 1.006, "g5.12xlarge": 5.672, "g5.48xlarge": 16.288,
    "g6e.xlarge": 1.861, "g6e.12xlarge": 10.493, "g6e.48xlarge": 30.131,
    "p4d.24xlarge": 21.96,
    "p4de.24xlarge": 27.45,
    "p5.4xlarge": 6.88, "p5.48xlarge": 55.04,
    "p5e.48xlarge": 63.30,
}

# CPU-only jobs: the smallest general-purpose size with at least --cpus cores.
CPU_TYPES = {2: "m7i.large", 4: "m7i.xlarge", 8: "m7i.2xlarge", 16: "m7i.4xlarge", 32: "m7i.8xlarge",
             64: "m7i.16xlarge"}
CPU_USD_PER_HOUR = {"m7i.large": 0.1008, "m7i.xlarge": 0.2016, "m7i.2xlarge": 0.4032, "m7i.4xlarge": 0.8064,
                    "m7i.8xlarge": 1.6128, "m7i.16xlarge": 3.2256}
DEFAULT_DISK_GB = 100


def gpus_offered() -> tuple[str, ...]:
    """The catalog GPUs EC2 offers: those with an instance type."""
    return tuple(name for name, counts in GPU_INSTANCES.items() if counts)


def gpu_instance_type(gpu: GpuRequest) -> str:
    """The instance type with `gpu.count` GPUs of its type; another count is a UserError naming the valid ones."""
    counts = GPU_INSTANCES.get(gpu.type.name, {})
    try:
        return counts[gpu.count]
    except KeyError:
        valid = ", ".join(str(c) for c in sorted(counts))
        raise UserError(
            f"EC2 has no instance with {gpu.count}x {gpu.type.name}; "
            f"valid counts for {gpu.type.name} on EC2: {valid}"
        ) from None


def instance_type(job: Job) -> str:
    """--instance-type, else the type with --gpu's count of that GPU, else a CPU type by --cpus."""
    if job.ec2 and job.ec2.instance_type:
        return job.ec2.instance_type
    if job.gpu:
        return gpu_instance_type(job.gpu_request)  # an impossible count is a UserError listing the valid ones
    cpus = job.cpus or 2
    for cores, itype in CPU_TYPES.items():
        if cores >= cpus:
            return itype
    raise UserError(f"--cpus {cpus:g}: the largest CPU type here has {max(CPU_TYPES)} cores; "
                    "name one with --instance-type")


def is_gpu_type(itype: str) -> bool:
    return any(itype in counts.values() for counts in GPU_INSTANCES.values()) or itype.split(".")[0][:1] in ("g", "p")


def ami_source(job: Job, itype: str) -> str:
    """An image id, or the SSM parameter name that holds one (resolved at submit)."""
    if job.ec2 and job.ec2.ami:
        return job.ec2.ami
    return GPU_AMI_PARAMETER if is_gpu_type(itype) else CPU_AMI_PARAMETER


def usd_per_hour(itype: str) -> float | None:
    if itype in GPU_USD_PER_HOUR:
        return GPU_USD_PER_HOUR[itype]
    return CPU_USD_PER_HOUR.get(itype)


def price(job: Job, itype: str) -> dict:
    hourly = usd_per_hour(itype)
    out = {"instance_type": itype, "usd_per_hour": hourly, "price_table_date": PRICE_TABLE_DATE,
           "region_of_prices": "us-east-1", "market": "spot" if job.spot else "on-demand"}
    if hourly is None:
        out["note"] = f"{itype} is not in the shipped price table; see the EC2 pricing page"
    elif job.max_runtime:
        out["worst_case_usd"] = round(hourly * job.billed_seconds / 3600, 2)
        out["worst_case_note"] = "on-demand price x (max runtime + grace period + push timeout)" + (
            "; spot usually costs less, its price varies by zone and hour" if job.spot else "")
    return out
