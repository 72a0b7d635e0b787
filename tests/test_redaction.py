"""The one redaction of URL credentials, at any depth, and messages of bounded length."""

from nuner_core.redaction import cap_message, credentialed_urls, redact_text, redact_values, safe_message, shown_value

SECRET = "s3cr3t-TOKEN-value"


def test_every_url_at_any_depth_is_redacted_and_found():
    tree = {
        "annotate.base_url": f"http://user:{SECRET}@host/v1",
        "evaluate.llms": [{"name": "q", "base_url": f"https://proxy/v1?api-key={SECRET}&deployment=x"}],
        "corpus.seed": 1,
        "note": f"see https://host/x?token={SECRET} for more",
        "plain": "s3://bucket/prefix",
    }
    shown = redact_values(tree)
    assert SECRET not in repr(shown)
    assert shown["evaluate.llms"][0]["base_url"] == "https://proxy/v1?api-key=***&deployment=x"
    assert shown["plain"] == "s3://bucket/prefix" and shown["corpus.seed"] == 1
    assert [where for where, _ in credentialed_urls(tree)] == ["annotate.base_url", "evaluate.llms.base_url", "note"]
    assert redact_text(f"got {{'base_url': 'http://u:{SECRET}@h/v1'}}") == "got {'base_url': 'http://***@h/v1'}"


def test_a_message_is_capped_after_it_is_redacted():
    url = f"http://user:{SECRET}@host/v1"
    message = safe_message("x" * 3990 + url)  # a cut through the URL would leave its secret unrecognisable
    assert SECRET not in message and len(message) <= 4000 and "more characters" in message
    assert len(cap_message("y" * 10_000, 100)) <= 100
    assert SECRET not in shown_value([url] * 100) and len(shown_value([url] * 100)) <= 200
