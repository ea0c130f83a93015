"""Finding and fetching the benchmark data (ALFWorld via ALFWORLD_DATA, alfworld's own convention)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ALFWORLD_SPLITS = ("train", "valid_seen", "valid_unseen")
ALFWORLD_JSON = "json_2.1.1"


class DataNotFoundError(RuntimeError):
    """The benchmark data is missing; the message says how to get it."""


def alfworld_data_dir() -> Path:
    """ALFWORLD_DATA, else ~/.cache/alfworld (alfworld's default)."""
    return Path(os.environ.get("ALFWORLD_DATA") or Path.home() / ".cache" / "alfworld").expanduser()


def _alfworld_missing_message(root: Path, what: str) -> str:
    return (
        f"ALFWorld data not found: {what}. ragdistill looks in ALFWORLD_DATA (now {root}). "
        "Get it in one of two ways: (1) from a local archive, "
        "`make data ALFWORLD_ARCHIVE=/path/to/alfworld_json_2.1.3.tar.xz` "
        "(the development copy is ../shared/data/alfworld_json_2.1.3.tar.xz); or (2) online, "
        "`make data` with no archive, which runs `alfworld-download` into ALFWORLD_DATA. "
        "If the data is elsewhere already, set ALFWORLD_DATA to the folder that holds "
        f"{ALFWORLD_JSON}/ and logic/."
    )


def alfworld_is_ready(root: Path | None = None) -> bool:
    """True when every split folder holds at least one game and the logic files exist."""
    root = root or alfworld_data_dir()
    if not (root / "logic" / "alfred.pddl").is_file():
        return False
    for split in ALFWORLD_SPLITS:
        split_dir = root / ALFWORLD_JSON / split
        if not split_dir.is_dir() or next(split_dir.glob("*/*/game.tw-pddl"), None) is None:
            return False
    return True


def require_alfworld(root: Path | None = None) -> Path:
    """Return the ALFWorld data folder, or raise one clear error that says how to get it."""
    root = root or alfworld_data_dir()
    if not root.exists():
        raise DataNotFoundError(_alfworld_missing_message(root, f"the folder {root} does not exist"))
    if not alfworld_is_ready(root):
        raise DataNotFoundError(
            _alfworld_missing_message(root, f"{root} has no games in {ALFWORLD_JSON}/<split>/ or no logic/")
        )
    return root


def unpack_alfworld_archive(archive: Path, root: Path) -> None:
    """Unpack an archive laid out as alfworld/{json_2.1.1,logic}/ into `root`, atomically per folder."""
    if not archive.is_file():
        raise DataNotFoundError(f"ALFWORLD_ARCHIVE={archive} is not a file. Point it at alfworld_json_2.1.3.tar.xz.")
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".unpack-") as tmp:
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        inner = Path(tmp) / "alfworld"
        src = inner if inner.is_dir() else Path(tmp)
        if not (src / ALFWORLD_JSON).is_dir():
            raise DataNotFoundError(f"{archive} does not contain {ALFWORLD_JSON}/: is it the ALFWorld json archive?")
        for name in (ALFWORLD_JSON, "logic"):
            dest = root / name
            if dest.exists():
                shutil.rmtree(dest)
            os.replace(src / name, dest)  # same filesystem: a rename, never a half-copied folder


def fetch_alfworld(archive: str | None = None, root: Path | None = None) -> Path:
    """Fill ALFWORLD_DATA from an archive if given, else with alfworld-download; no-op when ready."""
    root = root or alfworld_data_dir()
    if alfworld_is_ready(root):
        print(f"ALFWorld data ready in {root}")
        return root
    archive = archive if archive is not None else os.environ.get("ALFWORLD_ARCHIVE", "")
    if archive:
        print(f"Unpacking {archive} into {root} ...")
        unpack_alfworld_archive(Path(archive).expanduser(), root)
    else:
        exe = shutil.which("alfworld-download") or str(Path(sys.executable).parent / "alfworld-download")
        print(f"No ALFWORLD_ARCHIVE given: downloading with {exe} into {root} ...")
        env = dict(os.environ, ALFWORLD_DATA=str(root))
        result = subprocess.run([exe, "--data-dir", str(root)], env=env)
        if result.returncode != 0:
            raise DataNotFoundError(_alfworld_missing_message(root, "alfworld-download failed (offline?)"))
    return require_alfworld(root)


def main(argv: list[str] | None = None) -> int:
    """`make data`: make sure the ALFWorld data is in place."""
    try:
        root = fetch_alfworld()
    except DataNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    counts = {s: sum(1 for _ in (root / ALFWORLD_JSON / s).glob("*/*/game.tw-pddl")) for s in ALFWORLD_SPLITS}
    print("ALFWorld games per split: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
