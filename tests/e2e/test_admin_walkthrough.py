"""The README's data administrator's walkthrough, run as it stands: its shell block, executed by
bash against a started platform (the embedded mode, as ``make run``), must succeed and answer what
its comments say — register, submit, publish, import an .xlsx, apply, approve, read the figures."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
from dataclasses import asdict
from pathlib import Path
from typing import Any

from services.demo import POLICE, DemoCredentials
from tests.stack import ROOT, EmbeddedStack

SECTION = "## Data administrator's walkthrough (数据管理员：从登记到统计)"
README_GATEWAY = "http://127.0.0.1:8000"


def walkthrough_script(readme: str) -> str:
    """The bash blocks of the README's data administrator's walkthrough, in order."""
    start = readme.index(SECTION)
    end = readme.find("\n## ", start + len(SECTION))
    section = readme[start : end if end != -1 else len(readme)]
    blocks = re.findall(r"^```bash\n(.*?)^```", section, flags=re.S | re.M)
    assert blocks, "the walkthrough has no bash block"
    return "\n".join(blocks)


def answers(output: str) -> list[Any]:
    """The JSON documents the walkthrough printed, in order (curl prints them back to back), and
    the bare lines (``echo``) as strings."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while at < len(output):
        if output[at].isspace():
            at += 1
            continue
        if output[at] in "{[":
            value, at = decoder.raw_decode(output, at)
            found.append(value)
        else:
            line_end = output.find("\n", at)
            line_end = len(output) if line_end == -1 else line_end
            found.append(output[at:line_end])
            at = line_end
    return found


def test_the_walkthrough_block_is_found_and_parsed() -> None:
    script = walkthrough_script((ROOT / "README.md").read_text(encoding="utf-8"))
    assert "/v1/registry/imports/resources" in script and "/approve" in script and "/v1/registry/stats" in script
    assert answers('{"a": 1}{"b": [2]}\n101010/000002\n[3]') == [{"a": 1}, {"b": [2]}, "101010/000002", [3]]


async def test_the_data_administrators_walkthrough_works_as_written(
    embedded: tuple[EmbeddedStack, DemoCredentials], tmp_path: Path
) -> None:
    _, creds = embedded
    script = walkthrough_script((ROOT / "README.md").read_text(encoding="utf-8"))
    script = script.replace(README_GATEWAY, creds.gateway.rstrip("/"))
    # "from the repository root": its var/demo-credentials.json and .venv, here in a directory of
    # the test's own so that nothing is written into the repository.
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "demo-credentials.json").write_text(json.dumps(asdict(creds)), encoding="utf-8")
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    run = await asyncio.to_thread(
        subprocess.run,
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    assert run.returncode == 0, f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    assert run.stderr == "", run.stderr  # no curl or python complaint on the way

    code, submitted, published, line, imported, queue, approved, figures = answers(run.stdout)
    assert re.fullmatch(r"101010/\d{6}", code)
    assert (submitted["code"], submitted["status"]) == (code, "submitted")
    assert (published["code"], published["status"]) == (code, "published")
    assert (line["status"], line["fulfilled_by"]) == ("fulfilled", code)
    assert imported["imported"] == 1 and re.fullmatch(r"101010/\d{6}", imported["codes"][0])
    [pending] = queue["items"]
    assert (pending["resource"], pending["status"], pending["working_days_left"]) == (code, "pending", 10)
    assert (approved["id"], approved["status"], approved["valid_days"]) == (pending["id"], "approved", 180)
    assert approved["grant_id"] and approved["items"] == ["姓名", "注销日期"]
    assert figures["dept"] == POLICE["code"]
    assert figures["resources_by_share"]["conditional"] >= 2  # the demo's entry and this one
    assert figures["responsibilities"]["fulfilled"] >= 1
    assert figures["applications"]["pending"] == 0  # approved: none left in 公安's queue
