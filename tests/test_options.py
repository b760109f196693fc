"""Typed method options (datafree/options.py): declared once, resolved one way, flags of other methods refused."""
from __future__ import annotations

import argparse
import re
from dataclasses import FrozenInstanceError, dataclass

import pytest

import datafree_kd
import registry
from datafree.run.cli import run_cli
from datafree.errors import UsageError
from datafree.options import Options, add_option_flags, option, option_readers
from datafree.synthesis.adadfkd import AdaDFKDSynthesizer
from datafree.synthesis.cudfkd import CuDFKDSynthesizer
from datafree.synthesis.fast import FastSynthesizer

KD = ["--teacher", "wrn40_2", "--student", "wrn16_1"]


@dataclass(frozen=True)
class Base(Options):
    """base"""

    DEFAULTS = {"width": 8}

    width: int = option(4, "a width", "positive")
    rate: float = option(0.5, "a rate", "unit")
    mode: str = option("a", "a mode", choices=("a", "b"))


@dataclass(frozen=True)
class Child(Base):
    """child"""

    DEFAULTS = {"rate": 0.25}
    ROWS = {"small": {"width": 2}}

    double: int | None = option(None, "twice the width (unset: derived)")

    def derive(self) -> None:
        super().derive()
        if self.double is None:
            self.set("double", 2 * self.width)


def test_resolution_order_is_given_then_row_then_nearest_defaults_then_field():
    assert Base.resolve().as_config() == {"width": 8, "rate": 0.5, "mode": "a"}
    assert Child.resolve().as_config() == {"width": 8, "rate": 0.25, "mode": "a", "double": 16}
    assert Child.resolve(dataset="small").as_config() == {"width": 2, "rate": 0.25, "mode": "a", "double": 4}
    assert Child.resolve({"width": 3, "rate": None}, dataset="small").as_config() == \
        {"width": 3, "rate": 0.25, "mode": "a", "double": 6}
    assert Child.resolve({"double": 5}).double == 5            # a derived value that is given wins


def test_options_are_frozen_typed_and_checked_in_one_line():
    options = Child.resolve()
    with pytest.raises(FrozenInstanceError):
        options.width = 1
    for given, message in [({"width": 0}, "--width must be positive, got 0"),
                           ({"rate": 1.0}, "--rate must be in [0, 1), got 1.0"),
                           ({"rate": float("nan")}, "--rate must be a finite number, got nan"),
                           ({"mode": "c"}, "--mode must be one of a, b, got 'c'"),
                           ({"width": 2.5}, "--width must be an int, got 2.5")]:
        with pytest.raises(UsageError, match="^" + re.escape(message)):
            Child.resolve(given)
    assert Child.resolve({"rate": 0}).rate == 0.0 and isinstance(Child.resolve({"rate": 0}).rate, float)
    with pytest.raises(UsageError, match="has no option colour"):
        Child.resolve({"colour": 1})
    assert Child.from_config({**options.as_config(), "unrelated": 1}) == options


def test_help_prints_each_methods_resolved_default():
    parser = argparse.ArgumentParser()
    add_option_flags(parser, {"base": Base, "child": Child})
    text = " ".join(parser.format_help().split())
    assert "--width WIDTH a width [default: base 8; child 8 (small: 2)]" in text
    assert "--rate RATE a rate [default: base 0.5; child 0.25]" in text
    assert "--double DOUBLE twice the width (unset: derived) [default: derived]" in text
    assert vars(parser.parse_args([])) == {"width": None, "rate": None, "mode": None, "double": None}


def test_every_flag_is_declared_by_one_options_class():
    """Declared once: a flag that several methods read comes from one shared class (e.g. --js_T)."""
    declared: dict[str, set[str]] = {}
    for options in registry.method_options().values():
        for klass in options.__mro__:
            for name in klass.__dict__.get("__annotations__", {}):
                if name in options.flag_names():
                    declared.setdefault(name, set()).add(klass.__qualname__)
    assert {name: owners for name, owners in declared.items() if len(owners) > 1} == {}


def test_the_driver_help_states_per_method_defaults():
    text = " ".join(datafree_kd.build_parser().format_help().split())
    assert "--T T KD temperature [default: cudfkd 20 (cifar100: 5, tiny_imagenet: 5); cmi, adi, nayer 20; dafl, " \
           "zskt, dfad, mbdfkd, predfkd 1; dfq 1 (tiny_imagenet: 5); fast 20 (imagenet: 5); adadfkd 20 (cifar100: 2, " \
           "tiny_imagenet: 5)]" in text
    assert "--fast_variant {fast10,fast2,fast5,fast50}" in text


def test_every_flag_is_read_by_some_method_and_only_its_readers_accept_it():
    readers = option_readers(registry.method_options())
    assert readers["fast_variant"] == ["fast"] and readers["nz"] == ["cudfkd", "cmi", "dafl", "zskt", "dfq", "fast",
                                                                      "adadfkd", "dfad", "mbdfkd", "predfkd"]
    assert "ngf" not in registry.get_method("adi").Options.flag_names()
    parser = datafree_kd.build_parser()
    with pytest.raises(UsageError) as refused:
        datafree_kd.resolve_options(parser.parse_args(["--method", "adadfkd", *KD, "--fast_variant", "fast2"]))
    assert str(refused.value) == ("--fast_variant is not an option of --method adadfkd; it is read by fast: drop it "
                                  "or pick one of those methods")
    with pytest.raises(UsageError, match="--nz is not an option of --method adi; it is read by cudfkd, cmi, dafl"):
        datafree_kd.resolve_options(parser.parse_args(["--method", "adi", *KD, "--nz", "100"]))


def test_a_foreign_flag_exits_2_with_one_line_and_creates_nothing(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        run_cli(datafree_kd.main, ["--method", "adadfkd", *KD, "--fast_variant", "fast2",
                                   "--save_dir", str(tmp_path / "run")])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: --fast_variant is not an option of --method adadfkd")
    assert not (tmp_path / "run").exists()


def test_derived_values():
    fast = FastSynthesizer.Options.resolve({"fast_variant": "fast2", "warmup": 5, "lr_z": 0.5})
    assert (fast.g_steps, fast.lr_g, fast.lr_z, fast.reset_l0_epoch) == (2, 5e-3, 0.5, 124)
    assert CuDFKDSynthesizer.Options.resolve(dataset="cifar100").lambda_growth == 2e-5
    assert CuDFKDSynthesizer.Options.resolve().lambda_growth == 1e-4
    ended = CuDFKDSynthesizer.Options.resolve({"lambda_0": 1.0, "lambda_end": 2.0, "epochs": 2, "ep_steps": 10,
                                               "kd_steps": 5})
    assert ended.lambda_growth == pytest.approx(1.0 / 20)
    with pytest.raises(UsageError, match="either --lambda_growth or --lambda_end"):
        CuDFKDSynthesizer.Options.resolve({"lambda_growth": 1.0, "lambda_end": 2.0})
    assert AdaDFKDSynthesizer.Options.resolve({"lmda_ent": -5}).balance == 5.0
    assert FastSynthesizer.Options.resolve({"batch_size": 64}).synthesis_batch_size == 64   # Bs = B unless given
