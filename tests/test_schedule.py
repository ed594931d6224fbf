import json

import pytest

from spanmix.space import Layer, Schedule, ScheduleError, build, place_full


def test_text_round_trip_and_canonical_tokens():
    s = Schedule.parse("F s256, S256 f B512")
    assert s.text == "F S256 S256 F B512"
    assert Schedule.parse(s.text) == s
    assert s.full_indices == (0, 3) and s.n_full == 2 and s.windows == (256, 512)


def test_json_round_trip_and_stable_hash():
    s = build(8, 2, "even", 256)
    again = Schedule.from_json(s.to_json())
    assert again == s and hash(again) == hash(s)
    assert json.loads(s.to_json())["hash"] == s.hash
    # the digest is a function of the text alone, fixed across runs and machines
    assert s.hash == __import__("hashlib").sha256(s.text.encode()).hexdigest()[:16]
    assert s.hash != build(8, 2, "top", 256).hash


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("", "holds no layer"),
        ("F X12", "layer 1"),
        ("S0", "window >= 1"),
        ("S", "whole number"),
        ("Ffull", "written 'F'"),
        ("S64+", r"sink count after '\+'"),
        ("S64+-1", r"sink count after '\+'"),
        ("B64+4", "only a sliding layer keeps sink tokens"),
        ("F+4", "written 'F'"),
    ],
)
def test_bad_text_names_layer_and_value(text, fragment):
    with pytest.raises(ScheduleError, match=fragment):
        Schedule.parse(text)


def test_window_longer_than_context_names_layer():
    with pytest.raises(ScheduleError, match=r"layer 2: window 4096 is longer than the context 2048"):
        Schedule.parse("F S256 S4096").validate(2048)


def test_canonical_form_merges_equivalent_layers():
    s = Schedule.parse("S2048 B1 S1 B512 F")
    assert s.canonical(2048).text == "F S1 S1 B512 F"
    assert s.canonical(2048).hash == Schedule.parse("F S1 S1 B512 F").hash
    # sinks: +0 is no sink, and a window with its sinks that covers the context is full attention
    assert Schedule.parse("S64+0 S64+4 S2040+8 S2040+7").canonical(2048).text == "S64 S64+4 F S2040+7"
    assert Schedule.parse("S64+4").hash != Schedule.parse("S64").hash


def test_sinks_round_trip_and_context_check():
    s = build(4, 1, "top", 64, sinks=4)
    assert s.text == "S64+4 S64+4 S64+4 F" and Schedule.from_json(s.to_json()) == s
    assert s.kv_tokens(1024) == (68, 68, 68, 1024)
    with pytest.raises(ScheduleError, match=r"layer 0: 64 sink tokens is not below the context 64; allowed: 0..63"):
        Schedule.parse("S2+64").validate(64)


@pytest.mark.parametrize(
    "placement, expected",
    [("bottom", (0, 1)), ("top", (6, 7)), ("middle", (3, 4)), ("even", (3, 7)), ([1, 5], (1, 5))],
)
def test_placements(placement, expected):
    assert place_full(8, 2, placement) == expected
    assert build(8, 2, placement, 128).full_indices == expected


def test_even_matches_gemma3_interleaving():
    # Gemma 3: five local layers, then one global
    assert place_full(12, 2, "even") == (5, 11)


def test_per_layer_windows_and_errors():
    s = build(4, 1, "bottom", [64, 128, 256], local="block")
    assert s.text == "F B64 B128 B256"
    with pytest.raises(ScheduleError, match="3 local layers"):
        build(4, 1, "bottom", [64, 128])
    with pytest.raises(ScheduleError, match="placement 'left'"):
        build(4, 1, "left", 64)
    with pytest.raises(ScheduleError, match=r"n_full must be .* 0..4 \(got 5\)"):
        build(4, 5, "top", 64)


@pytest.mark.parametrize("t", [1, 7, 64, 100])
@pytest.mark.parametrize("layer", [Layer("full"), Layer("sliding", 1), Layer("sliding", 16), Layer("block", 16), Layer("block", 7),
                                   Layer("sliding", 16, 4), Layer("sliding", 1, 3)])
def test_attended_pairs_counts_the_mask(t, layer):
    count = 0
    for q in range(t):
        for k in range(q + 1):
            if layer.window is None:
                count += 1
            elif layer.kind == "sliding":
                count += k > q - layer.window or k < layer.sinks
            else:
                count += q // layer.window == k // layer.window
    assert layer.attended_pairs(t) == count


@pytest.mark.parametrize("text", ["F", "S1", "S7", "B7", "B1", "S200", "B64", "S7+4", "S1+2"])
def test_decode_keys_are_the_growth_of_attended_pairs(text):
    layer = Schedule.parse(text).layers[0]
    for t in range(1, 160):
        assert layer.decode_keys(t) == layer.attended_pairs(t) - layer.attended_pairs(t - 1)
        assert layer.decode_keys(t) <= layer.kv_tokens(t)  # never more than the cache holds


def test_placement_of_names_each_built_placement():
    from spanmix.space import placement_of

    for placement in ("bottom", "top", "middle", "even"):
        for n_full in range(1, 8):
            schedule = build(8, n_full, placement, 64)
            named = placement_of(schedule)
            # placements can coincide (1 of 8 at the top is also "even"); the name must rebuild it
            assert build(8, n_full, named, 64) == schedule
    assert placement_of(Schedule.parse("S8 S8")) == "none" and placement_of(Schedule.parse("F F")) == "all"
    assert placement_of(Schedule.parse("F S8 S8 F S8 S8 S8 S8")) == "other"
