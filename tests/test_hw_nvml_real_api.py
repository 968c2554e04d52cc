"""The fake NVML must not drift from the real ``pynvml`` (nvidia-ml-py) that runs on GPUs.

Every test of the NVML layer talks to :mod:`batchsizer.testing.fake_nvml`; these tests hold that fake
to the real module's names, constants, call signatures and error type, and run the real module
on this machine (no NVIDIA driver here) to check what a user without a GPU is told.
"""

from __future__ import annotations

import inspect
import re
import sys
from types import ModuleType

import pytest

from batchsizer.errors import UnsupportedError
from batchsizer.hw.nvml import Nvml
from batchsizer.testing import fake_nvml

real: ModuleType = pytest.importorskip("pynvml", reason="nvidia-ml-py is not installed (pip install -e '.[test]')")


def _fake_module() -> ModuleType:
    return fake_nvml.FakeNvml().module


def _positional_count(fn: object) -> int:
    params = inspect.signature(fn).parameters.values()  # type: ignore[arg-type]
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)


def test_every_name_the_fake_offers_exists_in_the_real_module():
    missing = [name for name in vars(_fake_module()) if not name.startswith("__") and not hasattr(real, name)]
    assert missing == []


def test_the_fakes_constants_have_the_real_values():
    fake = _fake_module()
    constants = {n: v for n, v in vars(fake).items() if n.startswith("NVML_") and isinstance(v, int)}
    assert constants, "the fake defines no constants?"
    wrong = {n: (v, getattr(real, n)) for n, v in constants.items() if getattr(real, n) != v}
    assert wrong == {}


def test_the_fakes_functions_take_the_real_positional_arguments():
    fake = _fake_module()
    functions = {n: f for n, f in vars(fake).items() if n.startswith("nvml") and callable(f)}
    assert len(functions) >= 20
    wrong = {
        n: (_positional_count(f), _positional_count(getattr(real, n)))
        for n, f in functions.items()
        if _positional_count(f) != _positional_count(getattr(real, n))
    }
    assert wrong == {}


def test_every_nvml_call_of_the_wrapper_is_one_the_fake_offers():
    """A call the wrapper makes but the fake lacks would go untested: keep the two in step."""
    import batchsizer.hw.gpu as gpu_module
    import batchsizer.hw.nvml as nvml_module
    import batchsizer.hw.nvml_meter as meter_module

    source = "".join(inspect.getsource(m) for m in (nvml_module, gpu_module, meter_module))
    called = set(re.findall(r"\b(nvml(?:Init|Shutdown|Device|System)\w*)", source)) | set(
        re.findall(r"\b(NVML_[A-Z_]+)\b", source)
    )
    offered = set(vars(_fake_module()))
    # error names are looked up with hasattr and may be absent from either; the rest must be offered
    untested = {n for n in called - offered if not n.startswith("NVML_ERROR_")}
    assert untested == set()
    assert all(hasattr(real, n) for n in called if not n.startswith("NVML_ERROR_")), called - set(dir(real))


def test_the_fakes_field_value_has_the_real_structs_fields():
    """``instant_power_w`` reads ``.nvmlReturn`` and ``.value.uiVal`` of each field value."""
    real_fields = {name for name, _ in real.c_nvmlFieldValue_t._fields_}
    assert {"fieldId", "nvmlReturn", "value"} <= real_fields
    assert "uiVal" in {name for name, _ in real.c_nvmlValue_t._fields_}
    gpu = fake_nvml.FakeGpu()
    fake = fake_nvml.FakeNvml([gpu]).module
    fake.nvmlInit()
    (value,) = fake.nvmlDeviceGetFieldValues(fake.nvmlDeviceGetHandleByIndex(0), [fake.NVML_FI_DEV_POWER_INSTANT])
    assert {"fieldId", "nvmlReturn", "value"} <= set(vars(value)) and hasattr(value.value, "uiVal")


def test_the_fakes_error_carries_its_code_like_the_real_one():
    err = real.NVMLError(real.NVML_ERROR_NO_PERMISSION)
    assert isinstance(err, real.NVMLError) and err.value == real.NVML_ERROR_NO_PERMISSION
    fake_err = fake_nvml.NVMLError(fake_nvml.ERROR_NO_PERMISSION)
    assert fake_err.value == err.value


def test_the_real_module_without_a_driver_gives_a_clear_typed_error(monkeypatch):
    """On a machine with no NVIDIA driver (this one, CI) the real module fails to load its library."""
    try:
        real.nvmlInit()
    except real.NVMLError:
        pass
    else:
        real.nvmlShutdown()
        pytest.skip("an NVIDIA driver is loaded here: nothing to check about its absence")
    monkeypatch.setitem(sys.modules, "pynvml", real)
    with pytest.raises(UnsupportedError, match="NVML is not available.*driver"):
        Nvml()
