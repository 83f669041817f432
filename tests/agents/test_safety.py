"""The safety pre-check's patterns: Luhn-checked card numbers, pasted secrets, custom rules."""

import pytest

from gateway.safety import SafetyCheck, SafetyConfig, SafetyRule, luhn_valid

CHECK = SafetyCheck(SafetyConfig())


@pytest.mark.parametrize(
    "text",
    [
        "my card is 4111 1111 1111 1111 thanks",
        "4111-1111-1111-1111",
        "amex 378282246310005",
        "pay with 5555555555554444 please",
    ],
)
def test_card_numbers_are_blocked_and_redacted(text):
    """Card numbers that pass Luhn, with spaces or dashes, block and are redacted."""
    verdict = CHECK.check(text)
    assert verdict.blocked
    assert verdict.findings == ("card_number",)
    assert "[redacted:card_number]" in verdict.redacted
    assert "1111 1111" not in verdict.redacted
    assert "4444" not in verdict.redacted


@pytest.mark.parametrize(
    "text",
    ["order 4111 1111 1111 1112", "call +1 555 123 4567", "tracking 1234567890123", "hi"],
)
def test_numbers_that_are_not_cards_pass(text):
    """Order numbers failing Luhn, phone numbers and short ids are allowed."""
    assert CHECK.check(text).action == "allow"


@pytest.mark.parametrize(
    ("text", "finding"),
    [
        ("key AKIAIOSFODNN7EXAMPLE", "aws_access_key"),
        ("sk-proj-abcdefghijklmnopqrstuvwx123", "openai_key"),
        ("ghp_" + "a" * 36, "github_token"),
        ("xoxb-123456789012-abcdef", "slack_token"),
        ("-----BEGIN RSA PRIVATE KEY-----", "private_key"),
        ("password: hunter2hunter2", "credential_assignment"),
    ],
)
def test_pasted_secrets_are_blocked(text, finding):
    """Cloud keys, tokens, private keys and password assignments block."""
    verdict = CHECK.check(text)
    assert verdict.blocked
    assert finding in verdict.findings


def test_custom_rule_can_flag_without_blocking_and_off_disables_builtins():
    """A flag rule lets the message through with a finding; 'off' turns card checks off."""
    check = SafetyCheck(
        SafetyConfig(
            card_numbers="off",
            rules=(SafetyRule(name="iban", pattern=r"\bDE\d{20}\b", action="flag"),),
        )
    )
    verdict = check.check("IBAN DE89370400440532013000 and card 4111111111111111")
    assert verdict.action == "flag"
    assert verdict.findings == ("iban",)


def test_luhn():
    """The Luhn checksum accepts test card numbers and rejects a changed digit."""
    assert luhn_valid("4111111111111111")
    assert not luhn_valid("4111111111111112")
