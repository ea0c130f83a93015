"""Finding and fetching the benchmark data: ALFWorld via ALFWORLD_DATA (its own convention), WebShop via WEBSHOP_DATA."""

from __future__ import annotations

import argparse
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


# WebShop's own file names; the small set adds a `_1000` suffix, the full set (1.18M products) has none.
WEBSHOP_PRODUCTS_GLOB = "items_shuffle*.json"
WEBSHOP_HUMAN_FILE = "items_human_ins.json"


def webshop_data_dir() -> Path:
    """WEBSHOP_DATA, else ~/.cache/webshop."""
    return Path(os.environ.get("WEBSHOP_DATA") or Path.home() / ".cache" / "webshop").expanduser()


def _webshop_missing_message(root: Path, what: str) -> str:
    return (
        f"WebShop data not found: {what}. ragdistill looks in WEBSHOP_DATA (now {root}) for WebShop's own files "
        "items_shuffle*.json (products) and items_ins_v2*.json (attributes), plus the optional items_human_ins.json. "
        "Get the small 1,000-product set from a local archive with "
        "`make data WEBSHOP_ARCHIVE=/path/to/webshop_small_1000.tar.xz` "
        "(the development copy is ../shared/data/webshop_small_1000.tar.xz), "
        "or set WEBSHOP_DATA to a folder that already holds those files "
        "(for the full set: the `data/` folder of a princeton-nlp/WebShop checkout after its setup script)."
    )


def _webshop_pair(folder: Path) -> tuple[Path, Path] | None:
    """Products and attributes files with the same suffix; the unsuffixed (full) set wins over `_1000`."""
    products = sorted(folder.glob(WEBSHOP_PRODUCTS_GLOB), key=lambda p: (p.name != "items_shuffle.json", p.name))
    for path in products:
        suffix = path.name[len("items_shuffle") :]
        attributes = folder / f"items_ins_v2{suffix}"
        if path.is_file() and attributes.is_file():
            return path, attributes
    return None


def webshop_files(root: Path | None = None) -> dict[str, Path | None]:
    """The products, attributes and human-instruction files under root (or root/data, WebShop's repo layout)."""
    root = root or webshop_data_dir()
    for folder in (root, root / "data"):
        pair = _webshop_pair(folder)
        if pair:
            human = folder / WEBSHOP_HUMAN_FILE
            return {"products": pair[0], "attributes": pair[1], "human": human if human.is_file() else None}
    return {"products": None, "attributes": None, "human": None}


def webshop_is_ready(root: Path | None = None) -> bool:
    """True when a products file and an attributes file are in place."""
    return webshop_files(root)["products"] is not None


def require_webshop(root: Path | None = None) -> Path:
    """Return the WebShop data folder, or raise one clear error that says how to get it."""
    root = root or webshop_data_dir()
    if not root.exists():
        raise DataNotFoundError(_webshop_missing_message(root, f"the folder {root} does not exist"))
    if not webshop_is_ready(root):
        raise DataNotFoundError(
            _webshop_missing_message(root, f"{root} has no items_shuffle*.json with an items_ins_v2*.json beside it")
        )
    return root


def unpack_webshop_archive(archive: Path, root: Path) -> None:
    """Unpack an archive laid out as webshop/items_*.json into `root`, atomically per file."""
    if not archive.is_file():
        raise DataNotFoundError(f"WEBSHOP_ARCHIVE={archive} is not a file. Point it at webshop_small_1000.tar.xz.")
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".unpack-") as tmp:
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        inner = Path(tmp) / "webshop"
        src = inner if inner.is_dir() else Path(tmp)
        if not webshop_is_ready(src):
            raise DataNotFoundError(f"{archive} holds no items_shuffle*.json with items_ins_v2*.json: not WebShop's?")
        # Products last: a folder is ready only once its products file is there, so a crash part-way
        # leaves a folder that is still "not ready" and the next `make data` unpacks again.
        files = sorted(p for p in src.iterdir() if p.is_file() and p.suffix == ".json")
        for path in sorted(files, key=lambda p: p.name.startswith("items_shuffle")):
            os.replace(path, root / path.name)  # same filesystem: a rename, never a half-written file


def fetch_webshop(archive: str | None = None, root: Path | None = None) -> Path:
    """Fill WEBSHOP_DATA from an archive (WEBSHOP_ARCHIVE when not given); no-op when ready."""
    root = root or webshop_data_dir()
    if webshop_is_ready(root):
        print(f"WebShop data ready in {root}")
        return root
    archive = archive if archive is not None else os.environ.get("WEBSHOP_ARCHIVE", "")
    if not archive:
        raise DataNotFoundError(_webshop_missing_message(root, f"no WEBSHOP_ARCHIVE was given and {root} is empty"))
    print(f"Unpacking {archive} into {root} ...")
    unpack_webshop_archive(Path(archive).expanduser(), root)
    return require_webshop(root)


def _wants_webshop() -> bool:
    """WebShop is fetched by default only when an archive is given or its folder exists already."""
    return bool(os.environ.get("WEBSHOP_ARCHIVE")) or webshop_data_dir().exists()


def main(argv: list[str] | None = None) -> int:
    """`make data`: ALFWorld always; WebShop when asked for, given an archive, or already present."""
    parser = argparse.ArgumentParser(prog="ragdistill-data", description=main.__doc__)
    # No `choices=`: argparse rejects an empty list against them when nargs="*" (Python < 3.12).
    parser.add_argument("datasets", nargs="*", metavar="{alfworld,webshop}", help="default: alfworld (+ webshop)")
    args = parser.parse_args(argv)
    unknown = set(args.datasets) - {"alfworld", "webshop"}
    if unknown:
        parser.error(f"unknown dataset(s) {', '.join(sorted(unknown))}; choose alfworld and/or webshop")
    wanted = args.datasets or ["alfworld"] + (["webshop"] if _wants_webshop() else [])
    status = 0
    if "alfworld" in wanted:
        try:
            root = fetch_alfworld()
            counts = {s: sum(1 for _ in (root / ALFWORLD_JSON / s).glob("*/*/game.tw-pddl")) for s in ALFWORLD_SPLITS}
            print("ALFWorld games per split: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        except DataNotFoundError as err:
            print(f"error: {err}", file=sys.stderr)
            status = 2
    if "webshop" in wanted:
        try:
            files = webshop_files(fetch_webshop())
            print("WebShop files: " + ", ".join(p.name for p in files.values() if p is not None))
        except DataNotFoundError as err:
            print(f"error: {err}", file=sys.stderr)
            status = 2
    elif not args.datasets:
        print("WebShop: skipped (give WEBSHOP_ARCHIVE=... or run `ragdistill-data webshop`)")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
