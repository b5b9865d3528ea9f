"""Every starter of the WML service passes it a key (issue 21): the local process and the container, each with the
key file outside the data folder, readable by the service's user only."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography.fernet import Fernet

from wml_localplatform.containers import MOUNTED_KEY_DIR, UID, ContainerWMLService
from wml_localplatform.wmlservice import DATA_DIRS, KEY_FILES, WMLService, make_key_file


def test_the_local_service_gets_a_key_beside_its_data_folder(tmp_path: Path) -> None:
    service = WMLService(tmp_path / "wml")
    assert service.env["WML_SERVER_KEY_FILE"] == str(service.key_file)
    assert not service.key_file.is_relative_to(service.data_dir)
    assert service.data_dir in DATA_DIRS
    assert service.key_file in KEY_FILES
    make_key_file(service.key_file)
    key = service.key_file.read_bytes()
    Fernet(key.strip())  # a valid key
    assert stat.S_IMODE(service.key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(service.key_file.parent.stat().st_mode) == 0o700
    make_key_file(service.key_file)  # a restart keeps the key its database was encrypted with
    assert service.key_file.read_bytes() == key


def test_a_key_file_the_caller_names_is_left_to_the_caller(tmp_path: Path) -> None:
    service = WMLService(tmp_path / "wml", env={"WML_SERVER_KEY_FILE": str(tmp_path / "theirs.key")})
    assert not service.own_key
    assert service.key_file == tmp_path / "theirs.key"


def test_the_container_mounts_the_key_read_only_for_the_image_user(tmp_path: Path) -> None:
    service = ContainerWMLService(tmp_path / "wml", env={"WML_SERVER_KEY_FILE": "/ignored"})
    assert service.env["WML_SERVER_KEY_FILE"] == f"{MOUNTED_KEY_DIR}/wml.key"
    volumes = service._volume()
    assert f"{service.key_file.parent}:{MOUNTED_KEY_DIR}:ro" in volumes
    assert service.key_file.is_file()
    assert os.stat(service.key_file).st_uid == UID
    assert stat.S_IMODE(service.key_file.stat().st_mode) == 0o600
