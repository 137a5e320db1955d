"""flags.py: a setting declared once as a dataclass field becomes a CLI flag
with the field's type, default and validation."""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Optional

import pytest

from posepipe.cli_support import PipelineChoice
from posepipe.flags import add_flags, from_args, given, setting
from posepipe.options import PipelineOptions
from posepipe.serving.cli import build_parser as serve_parser
from posepipe.serving.settings import ServingSettings


@dataclass(frozen=True)
class Example:
    count: int = setting(3, help="how many")
    ratio: Optional[float] = setting(None, help="a ratio")
    enabled: bool = setting(True, help="switch it off", flag="thing")
    verbose: bool = setting(False, help="say more", aliases=("loud",))
    mode: Optional[bool] = setting(None, help="tri-state")
    colour: str = setting("red", help="a colour", choices=("red", "blue"))
    hidden: int = setting(7, help="not on the command line", cli=False)
    undocumented: int = 1

    def __post_init__(self):
        if self.count < 1:
            raise ValueError(f"count must be >= 1, got {self.count}")


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_flags(parser, Example)
    return parser.parse_args(list(argv))


def test_unset_flags_keep_the_dataclass_defaults():
    assert given(Example, parse()) == {}
    assert from_args(Example, parse()) == Example()


def test_each_kind_of_field_parses():
    args = parse("--count", "5", "--ratio", "0.25", "--no_thing", "--loud", "--mode", "false", "--colour", "blue")
    assert from_args(Example, args) == Example(count=5, ratio=0.25, enabled=False, verbose=True, mode=False, colour="blue")
    assert parse("--mode").mode is True  # bare tri-state flag: True
    assert parse("--ratio", "none").ratio is None


@pytest.mark.parametrize("argv", [["--count", "x"], ["--colour", "green"], ["--mode", "maybe"], ["--hidden", "1"], ["--undocumented", "1"]])
def test_bad_or_unknown_flags_are_usage_errors(argv):
    with pytest.raises(SystemExit) as e:
        parse(*argv)
    assert e.value.code == 2


def test_validation_stays_in_the_dataclass():
    with pytest.raises(ValueError, match="count must be >= 1"):
        from_args(Example, parse("--count", "0"))


def test_overrides_win_over_flags():
    assert from_args(Example, parse("--count", "5"), count=9).count == 9


@pytest.mark.parametrize("cls", [ServingSettings, PipelineOptions])
def test_the_server_has_a_flag_for_every_documented_setting(cls):
    """`posepipe serve` offers every setting of both dataclasses, each round-tripping its default."""
    parser = serve_parser()
    documented = [f for f in dataclasses.fields(cls) if f.metadata.get("cli") and f.metadata.get("help")]
    assert documented, cls
    dests = {a.dest for a in parser._actions}
    assert {f.name for f in documented} <= dests
    defaults = from_args(cls, parser.parse_args([]))
    assert defaults == cls()


def test_server_flags_reach_the_settings():
    args = serve_parser().parse_args(["--port", "0", "--no_url_inputs", "--url_timeout", "2.5", "--visualize", "false"])
    settings = from_args(ServingSettings, args)
    assert (settings.port, settings.allow_url_inputs, settings.url_timeout_s, settings.visualize) == (0, False, 2.5, False)


def test_a_negatable_tri_state_also_gets_a_no_flag():
    @dataclass(frozen=True)
    class Tracking:
        track: Optional[bool] = setting(None, help="tri-state", negatable=True)

    parser = argparse.ArgumentParser()
    add_flags(parser, Tracking)
    assert given(Tracking, parser.parse_args([])) == {}
    assert parser.parse_args(["--track"]).track is True
    assert parser.parse_args(["--track", "false"]).track is False
    assert parser.parse_args(["--no_track"]).track is False
    plain = argparse.ArgumentParser()
    add_flags(plain, Example)
    with pytest.raises(SystemExit):
        plain.parse_args(["--no_mode"])  # only where asked for


def _pipeline_parsers():
    from posepipe.cli import _build_parser
    from posepipe.evaluation.cli import _eval_parser

    return {
        "posepipe": (_build_parser(), []),
        "posepipe serve": (serve_parser(), []),
        "posepipe eval": (_eval_parser("posepipe eval"), ["--dataset", "d"]),
    }


@pytest.mark.parametrize(
    "argv, expected",
    [
        ([], PipelineChoice()),
        (["--use_hpip"], PipelineChoice(use_hpip=True)),
        (["--use_hpip", "false"], PipelineChoice(use_hpip=False)),
        (["--use_hpip", "true", "--device", "cpu", "--pipeline", "my.yaml"], PipelineChoice("my.yaml", "cpu", True)),
    ],
)
def test_the_pipeline_flags_mean_the_same_in_every_command(argv, expected):
    """--pipeline, --device, --use_hpip: one declaration, the same parse in each
    CLI; --use_hpip absent stays None, so the pipeline YAML's use_hpip decides."""
    for name, (parser, required) in _pipeline_parsers().items():
        assert from_args(PipelineChoice, parser.parse_args([*required, *argv])) == expected, name


def test_the_pipeline_flags_have_one_help_text():
    helps = {}
    for name, (parser, _) in _pipeline_parsers().items():
        helps[name] = {a.dest: a.help for a in parser._actions if a.dest in ("pipeline", "device", "use_hpip")}
    assert len(helps["posepipe"]) == 3
    assert helps["posepipe"] == helps["posepipe serve"] == helps["posepipe eval"]
