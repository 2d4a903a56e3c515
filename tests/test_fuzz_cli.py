"""The CLI under arbitrary arguments (hypothesis): every input ends in an exit code and a
message, never a traceback; every refusal names what it refused."""

import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from initlab.cli import main

numbers = st.one_of(st.integers(-5, 6).map(str), st.sampled_from(["0", "1e400", "nan", "-0.5",
                                                                    "x", "", "1e-9"]))
names = st.sampled_from(["relu", "tanh", "relux", "softmax", "all", "", "he_normal", "1"])
layer_specs = st.one_of(st.sampled_from(["4,3", "3,2x2,2", "2,0,2", "2,-1,2", "a,b", "", "5",
                                         "4x0,2", "2,3x,2", "2,1000000,1000000,2"]),
                        st.lists(st.integers(-1, 9), min_size=1, max_size=4).map(
                            lambda xs: ",".join(map(str, xs))))


def _argv(draw_command):
    return draw_command


commands = st.one_of(
    st.tuples(st.just("theory"), st.just("--activation"), names, st.just("--sigma-b"), numbers,
              st.just("--sigma-w"), numbers),
    st.tuples(st.just("gradcheck"), st.just("--layers"), layer_specs, st.just("--samples"),
              numbers, st.just("--activation"), names, st.just("--loss"),
              st.sampled_from(["mse", "all", "msee", "binary_crossentropy"]), st.just("--tol"),
              numbers),
    st.tuples(st.just("inspect"), st.just("--layers"), layer_specs, st.just("--activation"),
              names, st.just("--replicas"), numbers, st.just("--batch"), numbers,
              st.just("--init"), names),
    st.tuples(st.just("list"), names),
    st.tuples(st.just("report"), st.sampled_from(["", ".", "/nonexistent", "README.md"])),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(argv=commands)
def test_any_arguments_end_in_a_code_and_a_message(argv, capsys):
    try:
        code = main(list(argv))
    except SystemExit as done:  # argparse's own refusal: usage on stderr, exit 2
        code = done.code
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert code in (0, 1, 2), (argv, code, out, err)
    if code == 2:
        message = (out + err).strip()
        assert message, argv
        # a refusal names what it refused: an argument, a value or a file
        assert re.search(r"--[a-z-]+|=|'|\"|/|\.md|folder|file|got", message), (argv, message)
