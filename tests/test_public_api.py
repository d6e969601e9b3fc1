"""The public API is explicit: __all__ is sorted, complete, and every name lives in `asyncmail`."""

import types

import asyncmail


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
