"""Test support shipped with the package: fault injection for meters (:mod:`.faults`), a scripted
device and meter on virtual time (:mod:`.scripted`) and a fake NVML held to the real pynvml's names
(:mod:`.fake_nvml`). Production code never needs these; the tests, benchmarks and ``--device
scripted`` do."""
