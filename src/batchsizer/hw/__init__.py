"""Real hardware: NVML power and GPU knobs, RAPL for CPUs, PyTorch inference and image decoding.

Nothing here is imported by the core; ``torch``, ``torchvision``, ``pynvml`` and Pillow are
imported lazily inside the functions that need them, so the controllers, the simulator and the
CLI start without them.
"""
