"""Progress reports: stage names, sampler step and window, throttled and only on change."""

from __future__ import annotations

from infinitetalk_worker.progress import ProgressReporter

GRAPH = {"9": {"class_type": "WanVideoSampler", "inputs": {"steps": 6}},
         "12": {"class_type": "VHS_VideoCombine", "inputs": {}}}


def reporter(interval=0.0):
    sent = []
    progress = ProgressReporter({"id": "job-1"}, interval, send=lambda job, payload: sent.append((job["id"], payload)))
    progress.use_graph(GRAPH, "9")
    return progress, sent


def test_sampler_progress_reports_window_and_step():
    progress, sent = reporter()
    progress.comfy_event({"node": "9", "value": 8, "max": 24})
    assert sent == [("job-1", {"stage": "sampling", "window": 2, "windows": 4, "step": 2, "steps": 6,
                               "progress": 0.333})]


def test_other_nodes_report_their_stage_and_fraction():
    progress, sent = reporter()
    progress.comfy_event({"node": "12", "value": 5, "max": 50})
    progress.comfy_event({"node": "77"})
    assert [payload for _, payload in sent] == [{"stage": "writing video", "progress": 0.1}, {"stage": "generating"}]


def test_updates_are_throttled_and_repeats_dropped():
    progress, sent = reporter(interval=60.0)
    progress.stage("preparing inputs")
    progress.stage("preparing inputs")
    for value in range(1, 25):
        progress.comfy_event({"node": "9", "value": value, "max": 24})
    assert [payload["stage"] for _, payload in sent] == ["preparing inputs"]
    progress.stage("delivering")
    assert sent[-1][1] == {"stage": "delivering"}


def test_a_failing_sender_never_fails_the_job():
    def broken(job, payload):
        raise RuntimeError("network down")

    progress = ProgressReporter({"id": "j"}, 0.0, send=broken)
    progress.stage("preparing inputs")
