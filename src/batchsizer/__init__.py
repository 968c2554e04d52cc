"""BatchSizer: run DNN inference under a GPU power cap by moving the batch size on the fly.

The core (batching, telemetry interfaces, controllers, the control loop, the simulator and the
CLI) needs no torch; real inference lives in :mod:`batchsizer.hw` behind the ``torch`` extra.
"""

from batchsizer.core.batching import DynamicBatchSampler, DynamicBatchStream
from batchsizer.core.caps import CapFile, CapSchedule, ConstantCap
from batchsizer.core.clock import VirtualClock, WallClock
from batchsizer.core.loop import ControlLoop, Window
from batchsizer.errors import BatchSizerError, ConfigError
from batchsizer.policies import Observation, Setting, make_controller

__all__ = [
    "BatchSizerError",
    "CapFile",
    "CapSchedule",
    "ConfigError",
    "ConstantCap",
    "ControlLoop",
    "DynamicBatchSampler",
    "DynamicBatchStream",
    "Observation",
    "Setting",
    "VirtualClock",
    "WallClock",
    "Window",
    "make_controller",
]

__version__ = "0.1.0"
