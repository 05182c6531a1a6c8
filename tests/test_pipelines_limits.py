"""`pipelines.limits` and `shown`: the limits' one declaration, and how messages echo bad values."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pipelines.limits import (
    LimitError,
    Limits,
    check_option,
    check_prompts,
    request_limits,
)
from pipelines.request import SEED_MAX, MorphRequest, check_request, parse_option, shown


def test_shown_keeps_short_values_and_cuts_long_ones() -> None:
    assert shown("cubic") == "'cubic'" and shown(7) == "7" and shown((1, 2)) == "(1, 2)"
    assert shown("x" * 100_000) == f"'{'x' * 40}'…(100000 characters)"
    assert shown(list(range(1000))).endswith("characters)") and len(shown(list(range(1000)))) < 80
    assert shown(10**5000) == "a whole number of 16610 bits"  # no repr: int() stops at 4300 digits
    assert shown("x" * 300, 200) == f"'{'x' * 200}'…(300 characters)"


def test_request_checks_echo_a_short_prefix() -> None:
    base = MorphRequest(prompts=("a", "b"), size=(32, 32))
    for change in ({"interp": "z" * 100_000}, {"prompts": ("a", " " * 100_000)}, {"walk": "w" * 100_000}):
        with pytest.raises(ValueError, match=r"…\(100000 characters\)") as caught:
            check_request(replace(base, **change))
        assert len(str(caught.value)) < 200


def test_seeds_are_checked_against_seed_max_everywhere() -> None:
    base = MorphRequest(prompts=("a", "b"), size=(32, 32))
    check_request(replace(base, seeds=(SEED_MAX,)))
    with pytest.raises(ValueError, match=f"seeds must be whole numbers between 0 and {SEED_MAX}, got {SEED_MAX + 1}"):
        check_request(replace(base, seeds=(SEED_MAX + 1,)))
    with pytest.raises(ValueError, match=f"between 0 and {SEED_MAX}"):
        check_request(replace(base, seeds=(2**63 - 1,)))


def test_a_pair_with_thousands_of_digits_is_refused_in_its_own_words() -> None:
    with pytest.raises(ValueError, match=r"size '9{40}'…\(5003 characters\) is far too large"):
        parse_option("size", "9" * 5000 + "x64")


def test_request_limits_leave_out_how_the_service_queues_jobs() -> None:
    names = [item.name for item in request_limits()]
    assert "max_frames" in names and "max_pixels" in names
    assert "deadline_s" not in names and "queue_size" not in names


def test_check_option_converts_loose_values_within_the_limits() -> None:
    limits = Limits(max_frames=10)
    assert check_option("frames", "10", limits, 2) == 10
    assert check_option("frames", 4.0, limits, 2) == 4
    assert check_option("seeds", "1 2", limits, 2) == (1, 2)
    assert check_option("batch_size", "3", limits, 2) == 3  # no limit: the request's own parser
    with pytest.raises(LimitError, match=r"frames must be between 2 and 10 \(--max-frames\); got 11\."):
        check_option("frames", "11", limits, 2)


def test_check_prompts_counts_a_chain_and_reads_a_picture_keys_text() -> None:
    limits = Limits(max_prompts=2, max_prompt_chars=10)
    check_prompts(("a", "b", "c"), False, limits)  # a fixed number of prompts: not capped
    with pytest.raises(LimitError, match=r"at most 2 prompts \(--max-prompts\); got 3"):
        check_prompts(("a", "b", "c"), True, limits)
    check_prompts(("image:/" + "p" * 100 + "/disc.png|a disc", "b"), True, limits)  # the path is not the prompt
    with pytest.raises(LimitError, match=r"prompt B is 11 characters long; the limit is 10"):
        check_prompts(("a", "image:x.png|" + "t" * 11), True, limits)
