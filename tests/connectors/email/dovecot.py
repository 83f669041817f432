"""A real Dovecot IMAP server for tests (Debian package ``dovecot-imapd``).

Started in the foreground from a throw-away directory with its own configuration: plain
LOGIN on a loopback port, one passwd-file user, Maildir storage. As root, Dovecot's own
unprivileged users (``dovecot``/``dovenull``) run the login and mail processes; as any
other user, that user runs everything.
"""

from __future__ import annotations

import getpass
import grp
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

USER = "support@acme.example"
PASSWORD = "imap-test-password"


@dataclass
class Dovecot:
    process: subprocess.Popen[bytes]
    port: int
    directory: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_dovecot() -> Dovecot:
    binary = shutil.which("dovecot") or "/usr/sbin/dovecot"
    if not os.path.exists(binary):
        message = "dovecot is not installed (apt-get install -y dovecot-imapd)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    root = os.geteuid() == 0
    if root:
        internal, login, mail_user = "dovecot", "dovenull", "dovecot"
    else:
        internal = login = mail_user = getpass.getuser()
    group = grp.getgrgid(os.getgid()).gr_name if not root else "dovecot"
    # Not under pytest's tmp_path: its 0700 parents would lock Dovecot's own users out.
    directory = Path(tempfile.mkdtemp(prefix="flowbiz-dovecot-"))
    directory.chmod(0o755)
    for sub in ("run", "state", "mail"):
        (directory / sub).mkdir()
    if root:
        shutil.chown(directory / "mail", mail_user, "dovecot")
    (directory / "users").write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n")
    port = _free_port()
    (directory / "dovecot.conf").write_text(
        f"""
protocols = imap
listen = 127.0.0.1
base_dir = {directory}/run
state_dir = {directory}/state
instance_name = flowbiz-test-{port}
log_path = {directory}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = {internal}
default_login_user = {login}
default_internal_group = {group}
first_valid_uid = 1
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {directory}/users
}}
userdb {{
  driver = static
  args = uid={mail_user} gid={group} home={directory}/mail/%u
}}
mail_location = maildir:~/Maildir
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
  chroot =
}}
service anvil {{
  chroot =
}}
"""
    )
    process = subprocess.Popen(  # noqa: S603 - our own argv, no shell
        [binary, "-F", "-c", str(directory / "dovecot.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = Dovecot(process, port, directory)
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                if sock.recv(100).startswith(b"* OK"):
                    return server
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            log = directory / "dovecot.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            server.stop()
            pytest.fail(f"dovecot did not start:\n{tail}")
        time.sleep(0.05)
