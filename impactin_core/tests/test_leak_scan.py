"""The leak scan: named hard cases, negatives, paths, and agreement with scrubbing."""

from __future__ import annotations

import re
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from impactin_core._redaction import (
    Finding,
    _surely_clean,
    detect,
    leak_scan,
    scrub_text,
)

HARD_CASES = [
    pytest.param("maria.lopez+volunteer@example.org", "email", id="plus-address"),
    pytest.param("bob\uff20example.net", "email", id="fullwidth-at"),
    pytest.param("dana@\u200bexample.com", "email", id="zero-width-space"),
    pytest.param("maria%40example.org", "email", id="percent-encoded-at"),
    pytest.param("jos\u00e9@b\u00fccher.example", "email", id="idn-domain"),
    pytest.param("j\u043ehn@example.com", "email", id="mixed-script"),
    pytest.param("+44 7700 900123", "phone", id="uk-international"),
    pytest.param("07700 900 123", "phone", id="uk-national"),
    pytest.param("+82 10-1234-5678", "phone", id="korea-international"),
    pytest.param("(415) 555-2671", "phone", id="us-national"),
    pytest.param("tel 212.555.1234", "phone", id="us-dotted"),
    pytest.param("2125551234", "phone", id="us-bare-digits"),
    pytest.param("Cell#2125551234", "phone", id="label-hash"),
    pytest.param("Mobile/+44 7700 900123", "phone", id="label-slash-plus"),
    pytest.param("Tel-030 12345678", "phone", id="label-dash"),
    pytest.param("TEL-2125551234", "phone", id="uppercase-label"),
    pytest.param("TELEPHONE#2125551234", "phone", id="label-telephone"),
    pytest.param("HOME-2125550188", "phone", id="label-home"),
    pytest.param("WORK-2125550199", "phone", id="label-work"),
    pytest.param("TELEFON/030 12345678", "phone", id="label-telefon"),
    pytest.param("HANDY-0151 23456789", "phone", id="label-handy"),
    pytest.param("WHATSAPP-2125551234", "phone", id="label-whatsapp"),
    pytest.param("John-2125551234", "phone", id="name-dash"),
    pytest.param("INV-+12125551234", "phone", id="id-prefix-plus"),
    pytest.param("06.12.34.56.78", "phone", id="fr-dotted"),
    pytest.param(
        "call me on \u0660\u0662\u0660\u0667\u0669\u0664\u0666\u0660\u0669\u0665\u0668",
        "phone",
        id="arabic-indic-digits",
    ),
    pytest.param(
        "\u06f0\u06f7\u06f9\u06f1\u06f1\u06f1\u06f2\u06f3\u06f4\u06f5\u06f6",
        "phone",
        id="persian-digits",
    ),
    pytest.param(
        "\u0966\u0968\u0966\u096d\u096f\u096a\u096c\u0966\u096f\u096b\u096e",
        "phone",
        id="devanagari-digits",
    ),
    pytest.param("123\u201045\u20106789", "us_ssn", id="ssn-unicode-hyphens"),
    pytest.param("123 45 6789", "us_ssn", id="ssn-spaces"),
    pytest.param("123-45-6789", "us_ssn", id="ssn-dashes"),
    pytest.param("AB 12 34 56 C", "uk_nino", id="nino-spaced"),
    pytest.param("AB123456C", "uk_nino", id="nino-compact"),
    pytest.param("4111 1111 1111 1111", "payment_card", id="card-luhn"),
    pytest.param("GB82 WEST 1234 5698 7654 32", "iban", id="iban"),
    pytest.param("DOB: 1990-05-17", "date_of_birth", id="dob-label"),
    pytest.param("born on 17/05/1990", "date_of_birth", id="dob-born"),
    pytest.param("zelda13.quux@example\u3002org", "email", id="ideographic-stop"),
    pytest.param("zelda13.quux@example\uff61org", "email", id="halfwidth-stop"),
    pytest.param("SSN 123456789", "us_ssn", id="ssn-label-compact"),
    pytest.param("ssn:123456789", "us_ssn", id="ssn-label-colon"),
    pytest.param("SSN# 123456789", "us_ssn", id="ssn-label-hash"),
    pytest.param("social security number 123456789", "us_ssn", id="ssn-label-words"),
    pytest.param("DOB 3 Feb 1985", "date_of_birth", id="dob-day-month"),
    pytest.param("born on 3 February 1985", "date_of_birth", id="dob-born-month"),
    pytest.param("DOB: February 3, 1985", "date_of_birth", id="dob-month-first"),
    pytest.param("born 3rd Feb 1985", "date_of_birth", id="dob-ordinal"),
    pytest.param(
        "date of birth: the 3rd of Sept. 1985", "date_of_birth", id="dob-of-month"
    ),
    pytest.param("D.o.B. 17/05/1990", "date_of_birth", id="dob-mixed-case-dots"),
    pytest.param("Date Of Birth 1990-05-17", "date_of_birth", id="dob-title-case"),
    pytest.param("BORN ON 3 FEB 1985", "date_of_birth", id="dob-upper-case"),
    pytest.param("Card 4222222222222", "payment_card", id="card-13-digits"),
    pytest.param("de89 3704 0044 0532 0130 00", "iban", id="iban-lower-case"),
    pytest.param("gb82west12345698765432", "iban", id="iban-lower-compact"),
    pytest.param("x(at)example.org", "email", id="at-in-parentheses"),
    pytest.param("x [at] example [dot] org", "email", id="at-dot-in-brackets"),
    pytest.param("x{AT}example.org", "email", id="at-in-braces"),
    pytest.param("x&#64;example.org", "email", id="at-decimal-entity"),
    pytest.param("x&#x40;example.org", "email", id="at-hex-entity"),
]

NEGATIVES = [
    pytest.param("ZIP 12345-6789", id="zip-plus-four"),
    pytest.param("Invoice 100234567", id="invoice-number"),
    pytest.param("4111 1111 1111 1112", id="card-failing-luhn"),
    pytest.param("2026-03-01", id="activity-date"),
    pytest.param("ik_" + "3f" * 20, id="idempotency-key"),
    pytest.param("psn_" + "a1" * 16, id="pseudonym"),
    pytest.param("INV-2125551234", id="invoice-id-us-digits"),
    pytest.param("ERP\u20132125551234", id="id-en-dash"),
    pytest.param("LEDGER/2125551234", id="id-slash"),
    pytest.param("PO#2125551234", id="id-hash"),
    pytest.param("21220000.00", id="decimal-amount"),
    pytest.param("Total 21220000.00 USD", id="amount-in-text"),
    pytest.param("(21220000.00)", id="amount-accounting-negative"),
    pytest.param("21 220 000.00", id="amount-space-thousands"),
    pytest.param("2.122.000.000,00", id="amount-decimal-comma"),
    pytest.param("Open Doors Community Arts", id="organization-name"),
    pytest.param("ORG-1701", id="organization-id"),
    pytest.param("Order 123456789 shipped", id="unlabelled-nine-digits"),
    pytest.param("Social club raised 123456 for 9 causes", id="social-no-ssn"),
    pytest.param("Launched on 3 Feb 2020", id="date-without-label"),
    pytest.param("The idea was born in 2019, 3 Feb", id="born-without-date"),
    pytest.param("Session on 12 03 26 a success", id="date-then-article"),
    pytest.param("Gala on 01.03.2026", id="date-with-points"),
    pytest.param("Gala on 31/12/2026", id="date-with-slashes"),
    pytest.param("tx123456a", id="lower-case-id-like-nino"),
    pytest.param("Project ok 12 34 56 a", id="lower-case-words-like-nino"),
    pytest.param("Ticket price: 5 (at) 2.50 each", id="at-price"),
    pytest.param("Coffee morning (at) 10.30am", id="at-time"),
    pytest.param("Lunch (AT) St.John Ambulance", id="at-place-name"),
    pytest.param("Started at 10 20 30 a.m.", id="time-then-am"),
    pytest.param("fy24 report on literacy for the riverside", id="words-after-digits"),
    pytest.param("de12 donations from the riverside team", id="country-code-words"),
    pytest.param("ES2300047690558N", id="iban-checksum-wrong-length"),
    pytest.param("We met at example dot org", id="at-dot-words"),
    pytest.param("Lunch (at) home, then (at) the park", id="at-without-domain"),
    pytest.param("Tom &amp; Jerry Literacy Fund", id="html-ampersand"),
    pytest.param("\u8bf7\u8054\u7cfb@\u5c0f\u738b\u3002\u8c22\u8c22", id="mention"),
]


@pytest.mark.parametrize(("text", "kind"), HARD_CASES)
def test_detects_hard_case(text: str, kind: str) -> None:
    assert kind in detect(text)


@pytest.mark.parametrize(("text", "kind"), HARD_CASES)
def test_scrub_removes_hard_case(text: str, kind: str) -> None:
    cleaned, count = scrub_text(f"Note: {text}.")

    assert f"[{kind}]" in cleaned
    assert count >= 1


@pytest.mark.parametrize("text", NEGATIVES)
def test_negative_does_not_block(text: str) -> None:
    assert leak_scan({"description": text}) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "iban de89 3704 0044 0532 0130 00 for the gift",
            "iban [iban] for the gift",
            id="lower-case",
        ),
        pytest.param(
            "GB82 WEST 1234 5698 7654 32 THANKS",
            "[iban] THANKS",
            id="upper-case-word-after",
        ),
        pytest.param(
            "IBAN GB82 WEST 1234 5698 7654 32\nthanks",
            "IBAN [iban]\nthanks",
            id="newline-after",
        ),
    ],
)
def test_scrub_replaces_whole_iban(text: str, expected: str) -> None:
    assert scrub_text(text) == (expected, 1)


def test_scrub_keeps_ssn_label() -> None:
    assert scrub_text("SSN 123456789") == ("SSN [us_ssn]", 1)


def test_obfuscated_email_local_part_scrubbed() -> None:
    text = "nick(dot)berg(at)example(dot)org"

    assert scrub_text(text) == ("[email]", 1)


def test_obfuscated_email_in_key_not_skipped() -> None:
    payload = {"contacts": {"x(at)example.org": "lead"}}

    assert leak_scan(payload) == [Finding("contacts.[email][key]", "email")]


def test_finding_names_path_and_kind() -> None:
    payload = {"event": {"notes": ["ok", "call +44 7700 900123"]}}

    assert leak_scan(payload) == [Finding("event.notes[1]", "phone")]


def test_finding_never_holds_value() -> None:
    payload = {"meta": {"maria@example.org": "+44 7700 900123"}}

    findings = leak_scan(payload)
    text = repr(findings)

    assert "maria" not in text
    assert "7700" not in text
    assert Finding("meta.[email][key]", "email") in findings


def test_allowed_path_is_skipped() -> None:
    payload = {"donor": [{"email": "maria@example.org"}], "note": "maria@example.org"}

    findings = leak_scan(payload, {"donor.email"})

    assert findings == [Finding("note", "email")]


def test_allowed_key_path_is_skipped() -> None:
    payload = {"teams": [{"maria@example.org": "lead"}], "x@example.org": 1}

    findings = leak_scan(payload, {"teams.[email][key]"})

    assert findings == [Finding("[email][key]", "email")]


def test_nested_depth_is_scanned() -> None:
    payload: dict[str, object] = {"a": {"b": {"c": [{"d": ["AB 12 34 56 C"]}]}}}

    assert leak_scan(payload) == [Finding("a.b.c[0].d[0]", "uk_nino")]


_pieces = st.sampled_from(
    [
        "maria.lopez+volunteer@example.org",
        "bob\uff20example.net",
        "dana@\u200bexample.com",
        "+44 7700 900123",
        "07700 900 123",
        "+82 10-1234-5678",
        "123\u201045\u20106789",
        "AB 12 34 56 C",
        "4111 1111 1111 1111",
        "ZIP 12345-6789",
        "Invoice 100234567",
        "zelda13.quux@example\u3002org",
        "SSN 123456789",
        "DOB 3 Feb 1985",
        "de89 3704 0044 0532 0130 00",
        "jg 10 37 26 a",
        "x [at] example [dot] org",
        "x&#64;example.org",
        " ",
        ", ",
        "\n",
        "tutored ",
    ]
)
_noise = st.text(st.characters(exclude_categories=["Cs", "Cc"]), max_size=12)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_pieces, _noise), max_size=8))
def test_scrubbed_text_passes_scan(parts: list[str]) -> None:
    cleaned, _ = scrub_text(" ".join(parts))

    assert detect(cleaned) == []


def test_scan_skip_keeps_findings() -> None:
    # Keys and values the scan takes as clean without running the detectors
    # (ASCII, no @ or %, under two digits) sit next to ones that need them.
    payload = {
        "note": "call 07700 900 123",
        "a@b.example": "y",
        "plain": {"nested": "Open Doors"},
        "d1": "7",
    }

    findings = leak_scan(payload)

    assert Finding("note", "phone") in findings
    assert Finding("[email][key]", "email") in findings
    assert not [f for f in findings if f.path.startswith(("plain", "d1"))]


@settings(max_examples=500, deadline=None)
@given(st.one_of(_pieces, _noise, st.text(max_size=20)))
def test_skipped_text_has_nothing_to_find(text: str) -> None:
    # The scan skips the detectors for some text; for that text they must
    # find nothing, in a value and in a key.
    if _surely_clean(text):
        assert detect(text) == []
    kinds = {finding.kind for finding in leak_scan({"k": text, text: 1})}
    assert kinds == set(detect(text))


def _valid_in_any_region(candidate: str) -> bool:
    """Parse ``candidate`` in every region the scan tries, as the scan once did."""
    import phonenumbers

    from impactin_core._redaction import _NATIONAL_REGIONS

    for region in _NATIONAL_REGIONS:
        try:
            number = phonenumbers.parse(candidate, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            return True
    return False


# Prefixes where the rules differ: international prefixes of one or more
# regions, country codes after them, and national numbers that start with 0
# (Indian toll-free 000800, Korean 00798 and 00308 written after a trunk 0).
_PREFIXES = [
    "0", "00", "000", "0000", "001", "0011", "0012", "00700", "00727", "0033",
    "0044", "0049", "0082", "0091", "00353", "000800", "00798", "000798",
    "000308", "000368", "0180020", "0183", "01", "02", "03", "06", "07", "08",
    "09",
]  # fmt: skip

_national_digits = st.one_of(
    st.from_regex(r"\A0[0-9]{6,14}\Z"),
    st.builds(
        lambda prefix, tail: prefix + tail,
        st.sampled_from(_PREFIXES),
        st.text("0123456789", min_size=4, max_size=12),
    ),
)


@settings(max_examples=1500, deadline=None)
@given(_national_digits, st.booleans())
def test_region_filter_agrees_with_phonenumbers(digits: str, spaced: bool) -> None:
    # The scan parses a number that starts with 0 only in the regions where
    # it may be valid. The result must match parsing in every region.
    from impactin_core._redaction import _is_phone

    candidate = " ".join([digits[:4], digits[4:]]) if spaced else digits

    assert _is_phone(candidate, digits) == _valid_in_any_region(candidate)


def _example_numbers() -> list[str]:
    """Return phonenumbers' example of each number type that is dialled with a 0.

    For every region the scan tries, this covers every region sharing its
    country code, in national form and after the international prefix 00.
    """
    import phonenumbers

    from impactin_core._redaction import _NATIONAL_REGIONS, _NUMBER_TYPES

    numbers = set()
    for region in _NATIONAL_REGIONS:
        code = phonenumbers.country_code_for_region(region)
        for sharing in phonenumbers.region_codes_for_country_code(code):
            metadata = phonenumbers.PhoneMetadata.metadata_for_region(sharing)
            for name in _NUMBER_TYPES:
                example = getattr(getattr(metadata, name, None), "example_number", None)
                if not example:
                    continue
                number = phonenumbers.parse(f"+{code}{example}")
                national = phonenumbers.format_number(
                    number, phonenumbers.PhoneNumberFormat.NATIONAL
                )
                numbers.add(national)
                numbers.add(f"00{code} {example}")
    # The scan parses national numbers in these regions only after a 0.
    return sorted(text for text in numbers if text.startswith("0"))


def test_region_filter_agrees_on_examples() -> None:
    from impactin_core._redaction import _is_phone

    examples = _example_numbers()
    disagree = [
        text
        for text in examples
        if _is_phone(text, "".join(filter(str.isdigit, text)))
        != _valid_in_any_region(text)
    ]

    assert len(examples) > 100
    assert disagree == []


def _international_examples() -> list[str]:
    """Return every region's example numbers after the international prefix 00.

    Each comes as phonenumbers formats it and with the national prefix kept
    after the country code, for every number type and every country code.
    """
    import phonenumbers

    from impactin_core._redaction import _NUMBER_TYPES

    numbers = set()
    for code, regions in phonenumbers.COUNTRY_CODE_TO_REGION_CODE.items():
        for region in regions:
            metadata = phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(
                code, region
            )
            if metadata is None:
                continue
            for name in _NUMBER_TYPES:
                example = getattr(getattr(metadata, name, None), "example_number", None)
                if not example:
                    continue
                numbers.add(f"00{code} {example}")
                if metadata.national_prefix:
                    numbers.add(f"00{code} {metadata.national_prefix}{example}")
    return sorted(numbers)


def test_region_filter_agrees_after_00() -> None:
    # Digits after 00 are parsed only if their country code allows a valid
    # number; the result must match parsing in every region.
    from impactin_core._redaction import _is_phone

    examples = _international_examples()
    disagree = [
        text
        for text in examples
        if _is_phone(text, "".join(filter(str.isdigit, text)))
        != _valid_in_any_region(text)
    ]

    assert len(examples) > 1000
    assert disagree == []


def test_national_pattern_matches_where_region_passes() -> None:
    # One failed match of _any_national_number skips the checks of every
    # region, so it must match wherever one region's check passes.
    from impactin_core._redaction import _any_national_number, _dialing_rules

    pattern = _any_national_number()
    candidates = ["".join(filter(str.isdigit, text)) for text in _example_numbers()] + [
        "00004711",
        "00100000",
        "0004711",
        "012345678",
    ]
    missed = []
    for digits in candidates:
        for rules in _dialing_rules():
            if rules.numbers is None:
                continue
            national = rules.national_prefix
            prefix = national.match(digits) if national else None
            passes = rules.numbers.match(digits) is not None or (
                prefix is not None and rules.numbers.match(digits, prefix.end())
            )
            if passes and pattern.match(digits) is None:
                missed.append((digits, rules.region))

    assert len(candidates) > 100
    assert missed == []


def test_region_filter_keeps_valid_regions() -> None:
    # Stricter than agreeing on the result: every region in which an
    # example in national form is valid must be parsed.
    import phonenumbers

    from impactin_core._redaction import _NATIONAL_REGIONS, _regions_to_parse

    missed = []
    for text in _example_numbers():
        if text.startswith("00"):
            continue
        digits = "".join(filter(str.isdigit, text))
        for region in _NATIONAL_REGIONS:
            try:
                number = phonenumbers.parse(text, region)
            except phonenumbers.NumberParseException:
                continue
            valid = phonenumbers.is_valid_number(number)
            if valid and region not in _regions_to_parse(digits):
                missed.append((text, region))

    assert missed == []


@pytest.mark.parametrize(
    "text",
    [
        "000-800-919-0566",
        "0008009190566",
        "000.800.919.0566",
        "000798 1234 5678",
        "Help at 000800-9190566",
        "07911 123456",
    ],
)
def test_numbers_after_leading_zeros_found(text: str) -> None:
    # Indian toll-free numbers start with 000800, Korean 00798 numbers are
    # also written after a trunk prefix 0, and 07911 123456 is valid only
    # in Guernsey, which shares the country code 44.
    assert "phone" in detect(text)


def test_zero_padded_id_not_phone() -> None:
    assert detect("gift 00004711") == []


def test_zero_padded_id_in_log_line_not_phone() -> None:
    # The second check of the same id reads the cached phone offsets.
    text = "Delivery cpu-00004711 attempt 1 for tenant t1 on benevity: success"

    assert detect(text) == []
    assert scrub_text(text) == (text, 0)


def test_birth_label_letters_lowercase_exactly() -> None:
    # _may_have_birth_label looks for the labels of _DOB in lower-cased text,
    # so it misses none only if every character that matches their letters
    # case-insensitively lower-cases to that letter ("s" fails: U+017F).
    every_character = "".join(map(chr, range(sys.maxunicode + 1)))
    matched = set(re.findall("(?i)[abdenort]", every_character))

    assert {char.lower() for char in matched} == set("abdenort")


@pytest.mark.parametrize(
    "text", ["0033 6 12 34 56 78", "0044 7911 123456", "00 49 30 12345678"]
)
def test_international_prefix_00_is_phone(text: str) -> None:
    assert "phone" in detect(text)


@pytest.mark.parametrize(
    ("payload", "found"),
    [
        pytest.param({"row": {"Amount": "3262000000"}}, [], id="jpy-amount"),
        pytest.param({"funds": {"amount": "32620000.00"}}, [], id="decimal-amount"),
        pytest.param(
            {"row": {"Amount": "4111111111111111"}},
            [("row.Amount", "payment_card")],
            id="card-in-amount",
        ),
        pytest.param(
            {"row": {"Amount": "call 3262000000"}},
            [("row.Amount", "phone")],
            id="text-in-amount",
        ),
        pytest.param(
            {"row": {"Note": "3262000000"}}, [("row.Note", "phone")], id="other-key"
        ),
        pytest.param(
            {"row": {"Paramount_Partner_ID": "2125551234"}},
            [("row.Paramount_Partner_ID", "phone")],
            id="amount-inside-word",
        ),
        pytest.param(
            {"row": {"Source_Amount_Ref": "2125551234"}},
            [("row.Source_Amount_Ref", "phone")],
            id="amount-not-last",
        ),
        pytest.param(
            {"row": {"Amount": "02079460123"}},
            [("row.Amount", "phone")],
            id="leading-zero",
        ),
        pytest.param({"gift": {"donationAmount": "3262000000"}}, [], id="camel-case"),
    ],
)
def test_amount_field_not_read_as_phone(
    payload: dict[str, Any], found: list[tuple[str, str]]
) -> None:
    findings = leak_scan(payload)

    assert [(finding.path, finding.kind) for finding in findings] == found
