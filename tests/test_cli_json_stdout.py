"""`export` and `bench` print their JSON result alone on stdout; exporters' progress goes to stderr."""
import os
import sys


def test_progress_printed_during_export_goes_to_stderr_not_into_the_json(capfd):
    from fetal_detect.commands import print_json, stdout_to_stderr

    with stdout_to_stderr():
        print("Ultralytics progress")
        sys.stdout.flush()
        os.write(1, b"C-level exporter output\n")
    print_json({"ok": 1})
    out, err = capfd.readouterr()
    assert out.strip() == '{\n  "ok": 1\n}' and "Ultralytics progress" in err and "C-level" in err
