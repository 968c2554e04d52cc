"""No test may skip because one of the project's own modules fails to import: a broken package would
then pass. Skips are for missing optional third-party packages (torch, torchvision, PIL, ...) only."""

from __future__ import annotations

import re
from pathlib import Path

#: an import-based skip naming a batchsizer module (importorskip, a find_spec test), or any ImportError caught
#: and turned into a skip (which hides which import failed: use pytest.importorskip for a third-party package)
OWN_SKIP = re.compile(
    r"importorskip\(\s*['\"]batchsizer"
    r"|find_spec\(\s*['\"]batchsizer"
    r"|except\s*\(?[\w\s,]*(ImportError|ModuleNotFoundError)[\w\s,]*\)?\s*(as \w+)?:\s*\n\s*pytest\.skip"
)


def test_no_test_skips_on_an_import_of_the_project_itself() -> None:
    here = Path(__file__).resolve().parent
    found = [
        f"{path.name}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0).splitlines()[0]}"
        for path in sorted(here.glob("*.py"))
        if path.name != Path(__file__).name
        for text in [path.read_text()]
        for m in OWN_SKIP.finditer(text)
    ]
    assert not found, "import the project's modules plainly (a failure must fail the test):\n" + "\n".join(found)
