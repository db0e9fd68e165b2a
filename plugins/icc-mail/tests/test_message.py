from __future__ import annotations

import json
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from icc_mail import Mail, MailError, send_mail


def roundtrip(message: EmailMessage) -> EmailMessage:
    parsed = BytesParser(policy=policy.default).parsebytes(message.as_bytes())
    assert isinstance(parsed, EmailMessage)
    return parsed


def text_of(part: EmailMessage) -> str:
    # On the wire (and so after decoding) text lines end in CRLF, MIME's canonical form.
    content: str = part.get_content()
    return content.replace("\r\n", "\n")


def mail(**fields: Any) -> Mail:
    return Mail.from_payload({"to": "jane@example.org", "subject": "Hi", "text": "Hello", **fields})


def test_utf8_subject_and_body_survive_the_round_trip() -> None:
    subject = "Grüße aus Köln — 東京 ✓"
    text = "Straße, café, naïve: ünïcödé text\nzweite Zeile 🎉\n"
    message = roundtrip(mail(subject=subject, text=text).build("noreply@example.org"))
    assert message["Subject"] == subject
    body = message.get_body(("plain",))
    assert body is not None
    assert text_of(body) == text
    assert body.get_content_charset() == "utf-8"
    assert message.as_bytes().isascii()  # 7bit transfer encoding: any server takes it


def test_html_becomes_an_alternative_part() -> None:
    message = roundtrip(mail(text="plain", html="<p>rich <b>ü</b></p>").build("noreply@example.org"))
    assert message.get_content_type() == "multipart/alternative"
    plain, html = message.get_body(("plain",)), message.get_body(("html",))
    assert plain is not None
    assert html is not None
    assert text_of(plain) == "plain\n"
    assert text_of(html) == "<p>rich <b>ü</b></p>\n"


def test_without_html_the_mail_is_plain_text() -> None:
    assert mail().build("noreply@example.org").get_content_type() == "text/plain"


def test_bcc_is_in_the_envelope_only() -> None:
    m = mail(to=["a@example.org"], cc="Cé <c@example.org>", bcc=["hidden@example.org"])
    message = roundtrip(m.build("noreply@example.org"))
    assert "Bcc" not in message
    assert b"hidden@example.org" not in message.as_bytes()
    assert m.recipients() == ["a@example.org", "c@example.org", "hidden@example.org"]


def test_headers_from_to_cc_reply_to_date_message_id_and_extra_headers() -> None:
    m = mail(
        to=["Jane Doe <jane@example.org>", "bob@example.org"],
        cc=["carol@example.org"],
        reply_to="Support <help@example.org>",
        sender="Shop <shop@example.org>",
        headers={"X-Campaign": "spring", "List-Unsubscribe": "<mailto:u@example.org>"},
    )
    message = roundtrip(m.build("ignored@example.org"))
    assert message["From"] == "Shop <shop@example.org>"
    assert message["To"] == "Jane Doe <jane@example.org>, bob@example.org"
    assert message["Cc"] == "carol@example.org"
    assert message["Reply-To"] == "Support <help@example.org>"
    assert message["X-Campaign"] == "spring"
    assert message["List-Unsubscribe"] == "<mailto:u@example.org>"
    assert message["Message-ID"] == f"<{m.uid}@example.org>"
    assert message["Date"] == m.date


def test_configured_sender_is_used_when_the_mail_has_none() -> None:
    assert mail().build("Robot <robot@example.org>")["From"] == "Robot <robot@example.org>"


def test_a_retry_sends_the_same_message_id_and_date() -> None:
    payload = json.loads(json.dumps(mail().to_payload()))
    first, second = (Mail.from_payload(payload).build("n@example.org") for _ in range(2))
    assert first["Message-ID"] == second["Message-ID"]
    assert first["Date"] == second["Date"]


def test_payload_is_json_and_round_trips() -> None:
    m = mail(cc=["c@example.org"], html="<p>x</p>", headers={"X-A": "b"}, reply_to=["r@example.org"])
    assert Mail.from_payload(json.loads(json.dumps(m.to_payload()))) == m


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"subject": "Hi\r\nBcc: victim@example.org"}, "line break"),
        ({"subject": "Hi\nX-Evil: 1"}, "line break"),
        ({"headers": {"X-Note": "a\r\nBcc: victim@example.org"}}, "line break"),
        ({"headers": {"X Bad": "a"}}, "header name"),
        ({"headers": {"Bcc": "x@example.org"}}, "set by send_mail"),
        ({"headers": {"content-type": "text/html"}}, "set by send_mail"),
        ({"to": "jane@example.org\r\nBcc: victim@example.org"}, "line break"),
        ({"to": "not an address"}, "not one e-mail address"),
        ({"to": "a@example.org, b@example.org"}, "not one e-mail address"),
        ({"to": []}, "at least one recipient"),
        ({"to": [42]}, "to[0]: an address is a string"),
        ({"to": None}, "at least one recipient"),
        ({"cc": ["ok@example.org", "@nodomain"]}, "cc[1]"),
        ({"sender": "nobody"}, "sender"),
        ({"subject": 3}, "subject must be a string"),
        ({"html": b"<p>"}, "html must be a string"),
        ({"headers": ["X-A: b"]}, "headers must be a mapping"),
    ],
)
def test_invalid_mail_is_refused_with_a_clear_error(fields: dict[str, Any], says: str) -> None:
    with pytest.raises(MailError) as info:
        mail(**fields)
    assert says in str(info.value)
    assert isinstance(info.value, ValueError)


def test_payload_without_to_or_with_unknown_keys_is_malformed() -> None:
    with pytest.raises(MailError, match="no 'to'"):
        Mail.from_payload({"subject": "x", "text": "y"})
    with pytest.raises(MailError, match="unknown keys"):
        Mail.from_payload({"to": "a@example.org", "body": "y"})
    with pytest.raises(MailError, match="JSON object"):
        Mail.from_payload(["a@example.org"])


def test_mail_without_any_sender_cannot_be_built() -> None:
    with pytest.raises(MailError, match="no sender"):
        mail().build(None)


# Every character str.splitlines() splits on: the email package refuses each of them in a header when the mail
# is built, so send_mail must refuse them up front (a mail that cannot be built would be retried forever).
SPLITLINES_BREAKS = ["\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]


@pytest.mark.parametrize("char", SPLITLINES_BREAKS, ids=[f"U+{ord(c):04X}" for c in SPLITLINES_BREAKS])
def test_send_mail_refuses_every_splitlines_break_in_a_header(char: str) -> None:
    for fields in ({"subject": f"Hi{char}there"}, {"headers": {"X-Note": f"a{char}b"}}):
        with pytest.raises(MailError, match="line break") as info:
            send_mail("jane@example.org", **{"subject": "Hi", "text": "x", **fields})
        assert "header injection" in str(info.value)
    with pytest.raises(MailError, match="line break"):
        send_mail(f"Jane{char}Doe <jane@example.org>", "Hi", "x")


# Any character, with the line breaks and lone surrogates (a str can hold one) drawn often enough to matter.
ANY_TEXT = st.text(st.characters() | st.sampled_from([*SPLITLINES_BREAKS, "\x00", "\ud800", "\udfff"]))


@settings(max_examples=300, deadline=None)
@given(subject=ANY_TEXT, value=ANY_TEXT, text=ANY_TEXT)
def test_any_header_value_send_mail_accepts_can_be_built_and_sent(
    subject: str, value: str, text: str
) -> None:
    """Whatever passes validation must become bytes for SMTP: a mail that cannot be built would be retried."""
    try:
        accepted = mail(subject=subject, headers={"X-Note": value}, text=text, html=text)
    except MailError:
        return
    accepted.build("noreply@example.org").as_bytes()


def test_send_mail_refuses_a_lone_surrogate() -> None:
    with pytest.raises(MailError, match="subject contains a lone surrogate"):
        send_mail("jane@example.org", "Hi \ud800", "x")
    with pytest.raises(MailError, match="text contains a lone surrogate"):
        send_mail("jane@example.org", "Hi", "x \udcff")
