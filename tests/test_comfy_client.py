"""What the client tells a user when ComfyUI refuses or fails a prompt: ComfyUI's words, bounded."""

from __future__ import annotations

from infinitetalk_worker.comfy_client import describe_failure, describe_rejection


def test_a_refusal_with_many_long_node_errors_is_quoted_bounded():
    body = {"error": {"message": "Prompt outputs failed validation", "details": ""},
            "node_errors": {str(n): {"class_type": "LoadAudio",
                                     "errors": [{"message": "Invalid audio file", "details": "x" * 5000}]}
                            for n in range(50)}}

    text = describe_rejection(body)

    assert text.startswith("ComfyUI refused the workflow: Prompt outputs failed validation; node 0 (LoadAudio): ")
    assert "and 45 more problems" in text
    assert len(text) < 3000


def test_a_failure_keeps_the_node_the_class_and_the_end_of_the_reason():
    messages = {"execution_error": {"node_id": "25", "node_type": "MultiTalkWav2VecEmbeds",
                                    "exception_type": "TypeError",
                                    "exception_message": "y" * 10000 + " 'NoneType' object is not subscriptable"}}

    text = describe_failure(messages)

    assert text.startswith("ComfyUI failed at node 25 (MultiTalkWav2VecEmbeds): TypeError: yyy")
    assert text.endswith("'NoneType' object is not subscriptable")
    assert len(text) < 500
