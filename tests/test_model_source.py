"""--model on real devices: a torchvision name, a TorchScript file, or the user's own code (FILE.py:NAME, module:NAME)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402

from batchsizer.cli import cli  # noqa: E402
from batchsizer.errors import ConfigError  # noqa: E402
from batchsizer.hw.model_source import is_model_reference, load_model  # noqa: E402
from batchsizer.hw.torch_runner import TorchRunner  # noqa: E402
from batchsizer.hw.workload import SyntheticInput  # noqa: E402
from tiny_models import TINY_CNN_SOURCE, tiny_cnn  # noqa: E402

#: the tiny CNN as a user's file, with the wrong things a user might name as well
USER_CODE = (
    TINY_CNN_SOURCE
    + """
INSTANCE = Net()
NOT_A_MODEL = 42

def returns_a_string():
    return "resnet50"

def fails():
    raise ValueError("no weights here")
"""
)


@pytest.fixture
def user_code(tmp_path: Path) -> Path:
    path = tmp_path / "net.py"
    path.write_text(USER_CODE)
    return path


def _predict(model: torch.nn.Module, items: int = 12, side: int = 32) -> list[int]:
    return TorchRunner(model).run(SyntheticInput(side, 0)(list(range(items))))[2]


def test_what_counts_as_a_file_or_code() -> None:
    assert not any(is_model_reference(n) for n in ("resnet50", "Res101", "mobilenet_v3_small", "IncV1"))
    assert all(is_model_reference(n) for n in ("net.py:build", "pkg.models:Net", "m.pt", "m.pt2", "dir/model", "x.ts"))


@pytest.mark.parametrize("attr", ["build", "Net", "INSTANCE"])
def test_user_code_from_a_file(user_code: Path, attr: str) -> None:
    loaded = load_model(f"{user_code}:{attr}", side=32)
    assert loaded.kind == "code" and loaded.side == 32
    assert _predict(loaded.module) == _predict(load_model(f"{user_code}:build").module)
    assert load_model(f"{user_code}:build").side == 224  # no size given: torchvision's usual


def test_user_code_by_module_name_from_the_current_folder(user_code: Path, monkeypatch) -> None:
    monkeypatch.chdir(user_code.parent)
    loaded = load_model("net:build")
    assert loaded.kind == "code" and isinstance(loaded.module, torch.nn.Module)


def test_torchscript_file_gives_the_same_predictions(tmp_path: Path) -> None:
    model = tiny_cnn().eval()
    path = tmp_path / "tiny.pt"
    torch.jit.save(torch.jit.script(model), str(path))
    loaded = load_model(str(path), side=32)
    assert loaded.kind == "torchscript" and loaded.name == "tiny.pt"
    assert _predict(loaded.module) == _predict(model)


def _export(model: torch.nn.Module, path: Path, *, dynamic: bool = True, side: int = 32) -> Path:
    x = torch.randn(4, 3, side, side)
    shapes = ({0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic else None
    torch.export.save(torch.export.export(model.eval(), (x,), dynamic_shapes=shapes), str(path))
    return path


def test_exported_program_runs_as_exported_and_gives_its_input_size(tmp_path: Path) -> None:
    model = tiny_cnn()
    loaded = load_model(str(_export(model, tmp_path / "tiny.pt2", side=40)))
    assert loaded.kind == "export" and loaded.side == 40 and loaded.name == "tiny.pt2"
    assert _predict(loaded.module, items=13, side=40) == _predict(model, items=13, side=40)  # any batch size


def test_exported_program_with_a_fixed_batch_or_conversions_is_refused(tmp_path: Path) -> None:
    fixed = _export(tiny_cnn(), tmp_path / "fixed.pt2", dynamic=False)
    with pytest.raises(ConfigError, match="exported for batches of exactly 4.*dynamic_shapes"):
        load_model(str(fixed))
    ok = _export(tiny_cnn(), tmp_path / "ok.pt2")
    for kwargs, flag in (({"half": True}, "--half"), ({"channels_last": True}, "--channels-last")):
        with pytest.raises(ConfigError, match=f"leave {flag} out"):
            load_model(str(ok), **kwargs)
    with pytest.raises(ConfigError, match="leave --checkpoint out"):
        load_model(str(ok), tmp_path / "w.pt")
    (tmp_path / "junk.pt2").write_text("not an archive")
    with pytest.raises(ConfigError, match="junk.pt2 is not a torch.export archive"):
        load_model(str(tmp_path / "junk.pt2"))


def test_checkpoint_goes_into_the_users_model(user_code: Path, tmp_path: Path) -> None:
    other = load_model(f"{user_code}:build").module
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(-1.5)
    ckpt = tmp_path / "w.pt"
    torch.save(other.state_dict(), ckpt)
    loaded = load_model(f"{user_code}:build", ckpt)
    assert _predict(loaded.module) == _predict(other)


BAD = [
    ("{dir}/missing.pt", "missing.pt is not found"),
    ("{dir}", "is a folder"),
    ("{dir}/state.pt", "is not a TorchScript archive"),
    ("{dir}/net.py:nothing", "has no 'nothing'"),
    ("{dir}/net.py:NOT_A_MODEL", "is a int, not an nn.Module"),
    ("{dir}/net.py:returns_a_string", "returned a str, not a torch.nn.Module"),
    ("{dir}/net.py:fails", "failed: ValueError: no weights here"),
    ("{dir}/gone.py:build", "gone.py is not a file"),
    ("no_such_module_xyz:build", "no module named 'no_such_module_xyz'"),
    ("{dir}/broken.py:build", "importing it failed: NameError"),
]


@pytest.mark.parametrize(("spec", "words"), BAD, ids=[w for _, w in BAD])
def test_bad_model_references_say_what_is_wrong(user_code: Path, spec: str, words: str) -> None:
    folder = user_code.parent
    torch.save(tiny_cnn().state_dict(), folder / "state.pt")
    (folder / "broken.py").write_text("undefined_name\n")
    with pytest.raises(ConfigError, match="model: ") as info:
        load_model(spec.format(dir=folder))
    assert words in str(info.value)


def test_run_a_users_model_from_the_command_line(user_code: Path, tmp_path: Path) -> None:
    """The whole path: --model FILE.py:NAME, a TorchScript file and a .pt2 of the same weights: the same outputs."""
    script = tmp_path / "net.pt"
    torch.jit.save(torch.jit.script(load_model(f"{user_code}:build").module.eval()), str(script))
    exported = _export(load_model(f"{user_code}:build").module, tmp_path / "net.pt2")
    outputs = {}
    for label, model in (("code", f"{user_code}:build"), ("script", str(script)), ("export", str(exported))):
        out = tmp_path / f"{label}.jsonl"
        args = ["run", "-q", "--device", "cpu", "--model", model, "--input-size", "32", "--items", "12"]
        args += ["--controller", "static", "--batch-size", "4", "--workers", "0", "--save-outputs", str(out)]
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output + result.stderr
        lines = [json.loads(line) for line in out.read_text().splitlines()[1:]]
        outputs[label] = [line["output"] for line in lines]
    expected = _predict(load_model(f"{user_code}:build").module)
    assert outputs["code"] == outputs["script"] == outputs["export"] == expected


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--model", "net.py:build"], "runs on real devices"),
        (["--input-size", "64"], "input-size: not used by 'sim:p40'; used by real devices"),
        (["--device", "cpu", "--input-size", "4"], "input-size: must be between 8 and 4096"),
    ],
)
def test_model_options_that_do_not_apply_are_refused(args: list[str], words: str) -> None:
    result = CliRunner().invoke(cli, ["run", "-q", "--items", "10", *args])
    assert result.exit_code == 2 and words in result.stderr, result.stderr
