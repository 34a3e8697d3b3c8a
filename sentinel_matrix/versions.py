"""transformers releases as a dimension: one cached environment per release, the matrix's default rows run in each.

An environment is a venv under the cache (`envs/transformers-X.Y.Z`) that sees this interpreter's packages
(torch is shared, never downloaded again) and holds its own transformers with the tokenizers and
huggingface-hub that release asks for. Each release's records go to results/versions/transformers-X.Y.Z.jsonl
(the main tables read results/*.jsonl only; the page's version table reads these). A release that cannot
install is recorded in results/versions/install-failures.log (JSON lines; not a results file). A run is resumable: a release whose rows
already ran on these sources (its `.done` file names the source hash) is skipped.

    python -m sentinel_matrix.versions run [X.Y.Z ...]   # default: RELEASES
    python -m sentinel_matrix.versions releases          # every newest patch of each minor from 4.57 on
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from packaging.version import Version

from sentinel_matrix.records import ROOT, now, source_hash
from sentinel_matrix.sources.cache import cache_dir

VERSIONS_RESULTS = ROOT / "results" / "versions"
INSTALL_FAILURES = VERSIONS_RESULTS / "install-failures.log"
OLDEST = Version("4.57")
# The committed spread: 4.57 and five 5.x releases across the range, the newest included.
RELEASES = ("4.57.6", "5.0.0", "5.5.4", "5.10.4", "5.17.0", "5.25.0")


class InstallError(RuntimeError):
    """A release that pip could not install; the message is pip's last line."""


def results_file(version: str) -> Path:
    return VERSIONS_RESULTS / f"transformers-{version}.jsonl"


def available_releases() -> list[str]:
    """The newest patch of every transformers minor release from 4.57 on, oldest first (asks the package index)."""
    done = subprocess.run([sys.executable, "-m", "pip", "index", "versions", "transformers"], capture_output=True,
                          text=True, timeout=120)
    listed = re.search(r"Available versions: (.*)", done.stdout)
    if not listed:
        raise InstallError(f"the package index lists no transformers releases: {done.stderr.strip()[-200:]}")
    newest: dict[tuple[int, int], Version] = {}
    for text in listed.group(1).split(", "):
        version = Version(text)
        if version >= OLDEST and not version.is_prerelease:
            key = (version.major, version.minor)
            newest[key] = max(newest.get(key, version), version)
    return [str(v) for _, v in sorted(newest.items())]


def environment(version: str) -> Path:
    """The python of the release's environment, made (and transformers installed) on first use."""
    folder = cache_dir() / "envs" / f"transformers-{version}"
    python = folder / "bin" / "python"
    if (folder / ".ready").is_file():
        return python
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--clear", str(folder)], check=True)
    # hub-kernels (later called kernels): the `kernels` release this transformers was written against (a newer
    # one, visible from this interpreter, breaks its import)
    done = subprocess.run([str(python), "-m", "pip", "install", "-q", f"transformers[hub-kernels,kernels]=={version}"],
                          capture_output=True, text=True)
    if done.returncode == 0:  # a release that cannot even import the modules the gated decoder uses is no release
        done = subprocess.run([str(python), "-c", "import transformers.activations, transformers.generation"],
                              capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        raise InstallError(lines[-1] if lines else f"pip exited with {done.returncode}")
    (folder / ".ready").write_text(version + "\n")
    return python


def installed_version(python: Path) -> str:
    return subprocess.run([str(python), "-c", "import transformers; print(transformers.__version__)"],
                          capture_output=True, text=True, check=True).stdout.strip()


def run_rows(version: str, pytest_args: list[str], results: Path) -> int:
    """The matrix's rows under `version`, appended to `results`: pytest's exit code."""
    python = environment(version)
    env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
    command = [str(python), "-m", "pytest", "matrix/", "--devices", "cpu", "--results", str(results), "-q",
               "-p", "no:randomly", "-p", "no:cacheprovider", *pytest_args]
    return subprocess.run(command, cwd=ROOT, env=env).returncode


def run(versions: list[str], pytest_args: list[str]) -> None:
    VERSIONS_RESULTS.mkdir(parents=True, exist_ok=True)
    sources = source_hash()
    for version in versions:
        done_file = results_file(version).with_suffix(".done")
        if done_file.is_file() and done_file.read_text().split()[:1] == [sources]:
            print(f"transformers {version}: already run on these sources, skipped", flush=True)
            continue
        start = time.time()
        try:
            python = environment(version)
            if Version(installed_version(python)) != Version(version):  # "5.0" is 5.0.0
                raise InstallError(f"the environment holds transformers {installed_version(python)}, not {version}")
        except (InstallError, subprocess.CalledProcessError) as exc:
            with open(INSTALL_FAILURES, "a", encoding="utf-8") as out:
                out.write(json.dumps({"transformers": version, "outcome": "error", "reason": str(exc),
                                      "time": now()}) + "\n")
            print(f"transformers {version}: cannot install ({exc})", flush=True)
            continue
        code = run_rows(version, pytest_args, results_file(version))
        seconds = round(time.time() - start)
        if code in (0, 1) and not pytest_args:  # every row ran (1: some failed, which the records say); a run
            # narrowed by pytest options (--families=...) adds records but does not stand for the release's run
            done_file.write_text(f"{sources} {seconds}\n")
        print(f"transformers {version}: pytest exit {code} in {seconds} s", flush=True)


def main(argv: list[str]) -> None:
    if argv[:1] == ["releases"]:
        print(" ".join(available_releases()))
    elif argv[:1] == ["run"]:
        versions = [a for a in argv[1:] if not a.startswith("-")] or list(RELEASES)
        run(versions, [a for a in argv[1:] if a.startswith("-")])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
