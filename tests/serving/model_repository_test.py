"""`serving.model_repository`: version discovery, model paths, and loading real exports,
including a genuinely corrupt SavedModel on disk (no fake loader)."""

import shutil

import pytest

from serving import model_repository


def test_discover_versions_ignores_incomplete_and_hidden_dirs(tmp_path):
    for name in ["1", "7", "12", ".5", "tmp9", "abc", "3"]:
        (tmp_path / name).mkdir()
    for name in ["1", "7", "12", ".5", "tmp9", "abc"]:
        (tmp_path / name / "saved_model.pb").write_bytes(b"")
    # "3" has no saved_model.pb: an export still being written.
    found = model_repository.discover_versions(str(tmp_path))
    assert sorted(found) == [1, 7, 12]


def test_resolve_model_paths_single_and_multi_model(tmp_path):
    (tmp_path / "a" / "1").mkdir(parents=True)
    (tmp_path / "b" / "3").mkdir(parents=True)
    (tmp_path / ".hidden").mkdir()
    base = str(tmp_path)
    resolve = model_repository.resolve_model_paths
    assert resolve(base) == {"a": str(tmp_path / "a"), "b": str(tmp_path / "b")}
    assert resolve(base, "a") == {"a": str(tmp_path / "a")}
    assert resolve(str(tmp_path / "a")) == {"a": str(tmp_path / "a")}
    assert resolve(str(tmp_path / "a"), "served") == {"served": str(tmp_path / "a")}


def _garble(version_dir):
    """Corrupts a SavedModel on disk: overwrites part of saved_model.pb and truncates it."""
    pb = version_dir / "saved_model.pb"
    data = bytearray(pb.read_bytes())
    data[100:164] = b"\xff" * 64
    pb.write_bytes(bytes(data[: len(data) // 2]))


@pytest.mark.large
def test_repository_policy_corrupt_version_and_removal(real_export, tmp_path):
    """Versions 1-3 of a real export, 3 garbled on disk: num_versions=2 keeps 2 and 1; version 3
    is END with its load error, and is loaded once its files are repaired."""
    model = tmp_path / "m"
    for version in ["1", "2", "3"]:
        shutil.copytree(real_export.version_dir, model / version)
    _garble(model / "3")
    repository = model_repository.ModelRepository(str(model), num_versions=2)
    repository.refresh()
    statuses = repository.statuses("m")
    assert [(s.version, s.state) for s in statuses] == [(3, "END"), (2, "AVAILABLE"),
                                                         (1, "AVAILABLE")]
    assert statuses[0].error_code == "UNKNOWN" and statuses[0].error_message
    assert repository.get("m").version == 2
    assert set(repository.get("m").signatures) >= {"serving_default", "serve_raw",
                                                   "serve_examples"}
    repository.refresh()  # unchanged files: not retried
    assert repository.statuses("m", 3)[0].state == "END"

    shutil.copy(real_export.version_dir / "saved_model.pb", model / "3" / "saved_model.pb")
    repository.refresh()  # repaired: loaded, and the oldest is dropped (num_versions=2)
    assert [(s.version, s.state) for s in repository.statuses("m")] == [(3, "AVAILABLE"),
                                                                        (2, "AVAILABLE")]
    shutil.rmtree(model / "3")
    repository.refresh()
    assert repository.get("m").version == 2
    with pytest.raises(model_repository.NotFoundError, match="Specific"):
        repository.get("m", 3)
    with pytest.raises(model_repository.NotFoundError):
        repository.get("other")
