"""The IETF RateLimit fields (issue 29, point 5): what each form says, and that any
input gives a result (None where nothing usable is said), never an exception."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from requests.structures import CaseInsensitiveDict

from requests_bloxs_errors.errors.ratelimit_fields import (
    MAX_FIELD,
    MAX_MEMBERS,
    RateLimitFields,
    parse_sf_list,
    rate_limit_fields,
)


def fields(**headers: str) -> RateLimitFields | None:
    return rate_limit_fields(
        CaseInsensitiveDict({k.replace("_", "-"): v for k, v in headers.items()})
    )


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (  # the current draft: one policy, the state of it
            {"RateLimit_Policy": '"default";q=100;w=60', "RateLimit": '"default";r=0;t=30'},
            RateLimitFields((100, 60.0), 0, 30.0),
        ),
        (  # several policies: the one RateLimit names is in force
            {
                "RateLimit_Policy": '"burst";q=10;w=1, "day";q=1000;w=86400',
                "RateLimit": '"burst";r=3;t=1',
            },
            RateLimitFields((10, 1.0), 3, 1.0),
        ),
        (  # several, none named: no rule can be told from them
            {"RateLimit_Policy": '"burst";q=10;w=1, "day";q=1000;w=86400'},
            None,
        ),
        (  # a token names a policy as a string does
            {"RateLimit_Policy": "default;q=5;w=2", "RateLimit": "default;r=4;t=2"},
            RateLimitFields((5, 2.0), 4, 2.0),
        ),
        (  # the earlier draft's fields
            {"RateLimit_Policy": "100;w=60", "RateLimit_Remaining": "0", "RateLimit_Reset": "30"},
            RateLimitFields((100, 60.0), 0, 30.0),
        ),
        (  # RateLimit-Limit alone names no window: no rule from it
            {"RateLimit_Limit": "100", "RateLimit_Remaining": "7", "RateLimit_Reset": "30"},
            RateLimitFields(None, 7, 30.0),
        ),
        ({"RateLimit": '"default";r=0'}, RateLimitFields(None, 0, None)),
        ({"RateLimit_Policy": '"d";q=0;w=60'}, None),  # no quota
        ({"RateLimit_Policy": '"d";q=5;w=-1'}, None),  # no window
        ({"RateLimit_Policy": '"d";q=5;w=1.5'}, None),  # not a whole number of seconds
        ({"RateLimit_Policy": '"d";q=?1;w=60'}, None),  # a boolean is no quota
        ({"RateLimit": '"d";r=-1;t=x'}, None),
        ({"RateLimit": "(inner list);r=0"}, None),  # not an item
        ({"RateLimit_Policy": '"d";q=1234567890123456;w=60'}, None),  # 16 digits
        ({"X_Rate_Limit_Remaining": "0"}, None),  # not these fields
    ],
)
def test_each_form_says_what_the_draft_means(headers, expected):
    assert fields(**headers) == expected


def test_structured_lists_parse_items_parameters_and_refuse_what_is_not_one():
    assert parse_sf_list('a;q=1;x, "s\\"x";b=?1;c=:AAE=:, 1.5, -2') == [
        ("a", {"q": 1, "x": True}),
        ('s"x', {"b": True, "c": "AAE="}),
        (1.5, {}),
        (-2, {}),
    ]
    assert parse_sf_list("") == []
    for broken in ("a,", ",a", "a;", "a;Q=1", '"open', "a b", "?2", "1.2345", "é"):
        assert parse_sf_list(broken) is None, broken
    assert parse_sf_list("a" * (MAX_FIELD + 1)) is None
    assert parse_sf_list(", ".join(["a"] * (MAX_MEMBERS + 1))) is None
    assert len(parse_sf_list(", ".join(["a"] * MAX_MEMBERS)) or []) == MAX_MEMBERS


field_text = st.text(st.characters(codec="latin-1"), max_size=120)
sf_like = st.lists(
    st.sampled_from(
        ['"d"', "d", "100", ";q=", ";w=", ";r=", ";t=", "5", "60", "0", ",", " ", "?1"]
    ),
    max_size=20,
).map("".join)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policy=st.one_of(field_text, sf_like), state=st.one_of(field_text, sf_like))
def test_any_fields_give_a_bounded_result_and_never_raise(policy, state):
    found = fields(RateLimit_Policy=policy, RateLimit=state)
    if found is not None:
        if found.policy is not None:
            quota, window = found.policy
            assert quota >= 1
            assert window >= 1
        assert found.remaining is None or found.remaining >= 0
        assert found.reset is None or 0 <= found.reset < 10**15
