"""The job directory: private to one job, inside JOB_ROOT, removed whatever the outcome."""

from __future__ import annotations

import pytest

from infinitetalk_worker.config import Settings
from infinitetalk_worker.job_directory import job_directory


def test_job_directory_is_removed_even_when_the_job_fails(tmp_path):
    settings = Settings(job_root=tmp_path / "jobs")
    with pytest.raises(RuntimeError), job_directory(settings, "job/../../x") as job_dir:
        assert job_dir.parent == settings.job_root
        assert job_dir.stat().st_mode & 0o777 == 0o700
        raise RuntimeError("boom")
    assert not job_dir.exists()
