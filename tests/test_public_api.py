"""The public API is explicit: __all__ is sorted, complete, and every name lives in `asyncmail`."""

import dataclasses
import types

import asyncmail
from asyncmail.engine._job import send_result


def test_all_is_a_sorted_tuple() -> None:
    assert isinstance(asyncmail.__all__, tuple)
    assert list(asyncmail.__all__) == sorted(asyncmail.__all__)


def test_all_lists_every_public_name() -> None:
    public = {
        name
        for name, value in vars(asyncmail).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public == set(asyncmail.__all__) - {"__version__"}


def test_public_objects_report_asyncmail_as_their_module() -> None:
    for name in asyncmail.__all__:
        obj = getattr(asyncmail, name)
        if isinstance(obj, type) or callable(obj):
            assert obj.__module__ == "asyncmail", name


def test_every_exception_derives_from_mail_error() -> None:
    for name in asyncmail.__all__:
        obj = getattr(asyncmail, name)
        if isinstance(obj, type) and issubclass(obj, BaseException):
            assert issubclass(obj, asyncmail.MailError), name


def test_message_error_is_a_value_error() -> None:
    assert issubclass(asyncmail.MessageError, ValueError)


def test_wrong_event_loop_error_is_api_misuse_not_a_delivery_failure() -> None:
    assert issubclass(asyncmail.WrongEventLoopError, RuntimeError)
    assert not issubclass(asyncmail.WrongEventLoopError, asyncmail.DeliveryError)


def test_the_engines_send_result_builds_what_the_constructor_builds() -> None:
    """``send_result`` (the hot path's way to make a SendResult) sets every field, and binds
    the error to its result, as ``SendResult(...)`` does."""
    values = {
        "message": object(),
        "status": asyncmail.Status.FAILED,
        "message_id": "<id@example.com>",
        "accepted": ("a@example.com",),
        "refused": {"b@example.com": asyncmail.Rejected("no", code=550)},
        "unknown": ("c@example.com",),
        "reply": asyncmail.Reply(250, "ok"),
        "attempts": 3,
        "error": asyncmail.Rejected("no", code=550),
        "relay": "smtp://relay.example.com:25",
    }
    assert list(values) == [f.name for f in dataclasses.fields(asyncmail.SendResult)]
    made = send_result(*values.values())  # type: ignore[arg-type]
    error = values["error"]
    assert isinstance(error, asyncmail.Rejected)
    assert error.result is made
    expected = asyncmail.SendResult(**{**values, "error": asyncmail.Rejected("no", code=550)})  # type: ignore[arg-type]
    for name in values:
        if name != "error":
            assert getattr(made, name) == getattr(expected, name), name
    assert type(made) is asyncmail.SendResult
