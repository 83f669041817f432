"""Assemble a project's files and write them into its folder.

Guarantees: every file is put together in memory first (:func:`project_files`), so an answer
that cannot be used leaves the disk untouched; :func:`check_target` refuses a folder that
exists and is not empty unless ``force`` is given; a symbolic link or a file where one of the
project's folders goes, or a folder where one of its files goes, is refused before the first
file is written; each file is written whole under a temporary name and renamed into place,
so an existing link at its name is replaced, never followed; the DKIM private key and its
folder are readable by the owner only (0600, 0700) from the moment they exist.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from gateway.scaffold.mail_dns import dkim_key, dkim_key_path, mail_records
from gateway.scaffold.options import InitOptions
from gateway.scaffold.platforms import setup_pages
from gateway.scaffold.project import env_example, gateway_yaml, persona_files

__all__ = ["ProjectFile", "TargetError", "check_target", "project_files", "write_project"]

_PRIVATE_FILE = 0o600
_PRIVATE_DIR = 0o700
_GITIGNORE = """\
.env
dkim/
flowbiz.db
flowbiz.db-*
"""


class TargetError(ValueError):
    """The project folder cannot be written as asked."""


@dataclass(frozen=True, slots=True)
class ProjectFile:
    path: Path  # relative to the project folder
    content: bytes
    private: bool = False


def check_target(directory: Path, *, force: bool) -> None:
    """Refuse a folder that is not ours to fill."""
    if directory.is_symlink():
        raise TargetError(f"{directory} is a symbolic link; give the real folder")
    if directory.exists() and not directory.is_dir():
        raise TargetError(f"{directory} exists and is not a folder")
    if directory.is_dir() and any(directory.iterdir()) and not force:
        raise TargetError(f"{directory} is not empty; use --force to write into it")


def project_files(options: InitOptions, directory: Path) -> list[ProjectFile]:
    """Every file of the project, in memory (the DKIM key is made or reused here)."""
    found = [
        ProjectFile(Path("gateway.yaml"), gateway_yaml(options).encode()),
        ProjectFile(Path(".env.example"), env_example(options).encode()),
        ProjectFile(Path(".gitignore"), _GITIGNORE.encode()),
    ]
    found += [
        ProjectFile(Path("personas") / name, content) for name, content in persona_files().items()
    ]
    records = []
    if options.email is not None:
        key_path = dkim_key_path(options.email)
        pem, _ = dkim_key(directory / key_path)
        found.append(ProjectFile(key_path, pem, private=True))
        records = mail_records(options.email, pem)
    found += [
        ProjectFile(Path(name), text.encode())
        for name, text in setup_pages(options, records).items()
    ]
    return found


def _in_the_way(directory: Path, files: list[ProjectFile]) -> None:
    """Refuse before writing anything if a folder on a file's way is a link or not a folder,
    or a file's name is taken by a folder."""
    for file in files:
        folder = directory
        for part in file.path.parent.parts:
            folder = folder / part
            if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
                raise TargetError(f"{folder} is in the way (not a plain folder)")
        target = directory / file.path
        if target.is_dir() and not target.is_symlink():
            raise TargetError(f"{target} is in the way (a folder)")


def _folder(directory: Path, relative: Path, *, private: bool) -> Path:
    folder = directory
    for part in relative.parts:
        folder = folder / part
        if not folder.exists():
            folder.mkdir(mode=_PRIVATE_DIR if private else 0o777)
    if private:
        folder.chmod(_PRIVATE_DIR)
    return folder


def write_project(directory: Path, files: list[ProjectFile]) -> None:
    _in_the_way(directory, files)
    directory.mkdir(parents=True, exist_ok=True)
    for file in files:
        folder = _folder(directory, file.path.parent, private=file.private)
        # mkstemp creates the file 0600; a public file is widened before it is renamed.
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=".flowbiz-init-")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(file.content)
            if not file.private:
                os.chmod(temporary, 0o666 & ~_umask())
            os.replace(temporary, folder / file.path.name)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
