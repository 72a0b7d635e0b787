"""`nuner run` rejects what it can before Prefect starts: one line, no traceback, exit code 2."""

import subprocess
import sys

import pytest

CODE = "import sys; from flows.cli import main; rc = main(sys.argv[1:]); print('prefect loaded:', 'prefect' in sys.modules); sys.exit(rc)"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--stages", "corpus,nosuch"], "nuner: unknown stage 'nosuch'; stages: corpus, annotate"),
        (["--set", "annotate.model=[unclosed"], "the value is not valid YAML (line 1, column 25"),
        (["--set", "nosuchstage.x=1"], "nosuchstage: unknown key (from --set nosuchstage.x;"),
    ],
)
def test_run_rejects_bad_arguments_before_prefect_starts(args, message, tmp_path):
    out = subprocess.run([sys.executable, "-c", CODE, "run", *args], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert "prefect loaded: False" in out.stdout
