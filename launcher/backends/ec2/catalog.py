"""Instance type, AMI and price for a job. Prices are on-demand list prices, us-east-1, as of PRICE_TABLE_DATE."""
from __future__ import annotations

from ...errors import UserError
from ...gpus import CATALOG, PRICE_TABLE_DATE
from ...job import Job

# The public parameters AWS keeps pointing at the newest image: the Deep Learning Base OSS Nvidia Driver GPU AMI
# (drivers and CUDA, Ubuntu 22.04) for GPU types, plain Ubuntu 22.04 for CPU ones.
GPU_AMI_PARAMETER = "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id"
CPU_AMI_PARAMETER = "/aws/service/canonical/ubuntu/server/22.04/stable/current/amd64/hvm/ebs-gp2/ami-id"

# CPU-only jobs: the smallest general-purpose size with at least --cpus cores.
CPU_TYPES = {2: "m7i.large", 4: "m7i.xlarge", 8: "m7i.2xlarge", 16: "m7i.4xlarge", 32: "m7i.8xlarge",
             64: "m7i.16xlarge"}
CPU_USD_PER_HOUR = {"m7i.large": 0.1008, "m7i.xlarge": 0.2016, "m7i.2xlarge": 0.4032, "m7i.4xlarge": 0.8064,
                    "m7i.8xlarge": 1.6128, "m7i.16xlarge": 3.2256}
DEFAULT_DISK_GB = 100


def instance_type(job: Job) -> str:
    """--instance-type, else the type with --gpu's count of that GPU, else a CPU type by --cpus."""
    if job.ec2 and job.ec2.instance_type:
        return job.ec2.instance_type
    if job.gpu:
        return job.gpu_request.ec2_instance_type()  # an impossible count is a UserError listing the valid ones
    cpus = job.cpus or 2
    for cores, itype in CPU_TYPES.items():
        if cores >= cpus:
            return itype
    raise UserError(f"--cpus {cpus:g}: the largest CPU type here has {max(CPU_TYPES)} cores; "
                    "name one with --instance-type")


def is_gpu_type(itype: str) -> bool:
    return any(itype in g.ec2.values() for g in CATALOG.values()) or itype.split(".")[0][:1] in ("g", "p")


def ami_source(job: Job, itype: str) -> str:
    """An image id, or the SSM parameter name that holds one (resolved at submit)."""
    if job.ec2 and job.ec2.ami:
        return job.ec2.ami
    return GPU_AMI_PARAMETER if is_gpu_type(itype) else CPU_AMI_PARAMETER


def usd_per_hour(itype: str) -> float | None:
    for g in CATALOG.values():
        if itype in g.ec2_usd_per_hour:
            return g.ec2_usd_per_hour[itype]
    return CPU_USD_PER_HOUR.get(itype)


def price(job: Job, itype: str) -> dict:
    hourly = usd_per_hour(itype)
    out = {"instance_type": itype, "usd_per_hour": hourly, "price_table_date": PRICE_TABLE_DATE,
           "region_of_prices": "us-east-1", "market": "spot" if job.spot else "on-demand"}
    if hourly is None:
        out["note"] = f"{itype} is not in the shipped price table; see the EC2 pricing page"
    elif job.max_runtime:
        out["worst_case_usd"] = round(hourly * job.max_runtime / 3600, 2)
        out["worst_case_note"] = "on-demand price x max runtime" + (
            "; spot usually costs less, its price varies by zone and hour" if job.spot else "")
    return out
