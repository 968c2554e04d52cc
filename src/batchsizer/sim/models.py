"""The paper's ten DNNs (Table 1) and its two input sets, as costs the plant model turns into time and power.

Compute per image is the public multiply-accumulate count of each network at its usual input size
(GoogLeNet 1.5 G, BN-Inception 2.0 G, Inception-V3 5.7 G, MobileNet-V1 0.57 G, MobileNet-V2 0.30 G,
NASNet-A Mobile 0.56 G, PNASNet-5 Mobile 0.59 G, ResNet-V2-50/101/152 4.1/7.8/11.5 G), times two
for FLOPs; Table 1's "MFLOPs" column keeps the same ordering and ratios. Weights are the frozen
graph sizes of Table 1. What each network makes of the GPU (how much of peak it reaches, how many
kernels it launches per batch, how hard it drives the SMs when busy) is fitted to the paper's
statements and to public P40 throughput figures; see docs/simulator.md.

Datasets differ in host-side cost: the paper's pipeline decoded and resized JPEGs on the CPU for
every batch, full-size ImageNet photos costing several times a Caltech-256 image, which is why
MobileNet gains much more from batching on Caltech-256 than on ImageNet.
"""

from __future__ import annotations

from dataclasses import dataclass

from batchsizer.errors import ConfigError


@dataclass(frozen=True)
class ModelSpec:
    """One DNN's costs. ``gflops`` per image; ``efficiency``: fraction of FP32 peak at full occupancy."""

    abbr: str
    name: str
    gflops: float
    weights_mb: float
    input_px: int
    efficiency: float
    #: kernels launched per batch; each costs ``KERNEL_S`` whatever the batch size
    kernels: int
    #: how hard the network drives the GPU when busy, relative to a dense ResNet (1.0)
    intensity: float
    #: multiplies the GPU's half-occupancy batch size (small layers need bigger batches)
    half_factor: float
    #: exponent of compute time on 1/clock (1: compute bound; lower: memory bound)
    clock_beta: float
    aliases: tuple[str, ...] = ()


#: one kernel launch and its tail on a TF 1.15 graph (s)
KERNEL_S = 12e-6

# fmt: off
#                 abbr      name            GFLOPs  MB    px  eff  kernels intensity half beta
MODELS: dict[str, ModelSpec] = {
    m.abbr.lower(): m
    for m in (
        ModelSpec("IncV1", "Inception V1", 3.0, 26.06, 224, 0.42, 230, 0.80, 0.9, 0.90, ("inceptionv1", "googlenet")),
        ModelSpec("IncV2", "Inception V2", 4.0, 43.92, 224, 0.45, 300, 0.84, 0.9, 0.90, ("inceptionv2", "bninception")),
        ModelSpec("IncV3", "Inception V3", 11.4, 93.42, 299, 0.52, 420, 0.95, 0.8, 0.93, ("inceptionv3",)),
        ModelSpec("MobV1", "Mobilenet-V1-1", 1.14, 16.69, 224, 0.22, 90, 0.62, 1.0, 0.75, ("mobilenetv1", "mobilenet")),
        ModelSpec("MobV2", "Mobilenet-V2-1", 0.60, 13.75, 224, 0.15, 160, 0.52, 1.0, 0.70, ("mobilenetv2",)),
        ModelSpec("NASNET", "NASNet-Mobile", 1.13, 21.37, 224, 0.12, 1000, 0.55, 1.2, 0.70, ("nasnetmobile", "nasnet_mobile")),
        ModelSpec("PNASNET", "PNASNet-Mobile", 1.18, 20.37, 224, 0.13, 800, 0.58, 1.2, 0.72, ("pnasnetmobile", "pnasnet_mobile")),
        ModelSpec("Res50", "ResNet-V2-50", 8.2, 100.21, 224, 0.55, 250, 0.98, 0.85, 0.95, ("resnet50", "resnetv250", "resnet")),
        ModelSpec("Res101", "ResNet-V2-101", 15.6, 174.82, 224, 0.56, 500, 1.00, 0.75, 0.95, ("resnet101", "resnetv2101")),
        ModelSpec("Res152", "ResNet-V2-152", 23.0, 236.32, 224, 0.57, 750, 1.00, 0.70, 0.95, ("resnet152", "resnetv2152")),
    )
}
# fmt: on


@dataclass(frozen=True)
class DatasetSpec:
    """Host-side cost of one batch: ``batch_s`` (session call, iterator re-init) + ``image_s`` per image."""

    name: str
    label: str
    image_s: float
    batch_s: float


DATASETS: dict[str, DatasetSpec] = {
    "imagenet": DatasetSpec("imagenet", "ImageNet", image_s=0.0060, batch_s=0.004),
    "caltech": DatasetSpec("caltech", "Caltech-256", image_s=0.0016, batch_s=0.004),
}
_DATASET_ALIASES = {"caltech256": "caltech", "caltech-256": "caltech", "ilsvrc": "imagenet", "ilsvrc2012": "imagenet"}


def _key(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum() or ch == "_").replace("_", "")


def get_model(name: str) -> ModelSpec:
    """The model called ``name`` (Table 1 abbreviation or an alias, any case), or ConfigError listing them."""
    key = _key(name)
    for m in MODELS.values():
        if key == _key(m.abbr) or key in {_key(a) for a in m.aliases}:
            return m
    raise ConfigError(
        "model", f"unknown simulated model {name!r}; choose one of {', '.join(m.abbr for m in MODELS.values())}"
    )


def get_dataset(name: str) -> DatasetSpec:
    """``imagenet`` or ``caltech`` (any case, caltech256 accepted), or ConfigError listing them."""
    key = name.strip().lower()
    key = _DATASET_ALIASES.get(key, key)
    if key not in DATASETS:
        raise ConfigError("dataset", f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[key]
