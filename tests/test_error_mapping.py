"""aiosmtplib's errors are translated at one boundary, every class of them."""

import inspect
import ssl

import aiosmtplib.errors as smtp_errors
import pytest

import asyncmail
from asyncmail import Phase
from asyncmail.smtp._handshake import map_error


def _all_aiosmtplib_errors() -> list[type[BaseException]]:
    return [
        obj
        for _, obj in inspect.getmembers(smtp_errors, inspect.isclass)
        if issubclass(obj, smtp_errors.SMTPException)
    ]


def _instance(cls: type[BaseException]) -> BaseException:
    if issubclass(cls, smtp_errors.SMTPRecipientRefused):
        return cls(550, "5.1.1 no such user", "bob@example.org")
    if issubclass(cls, smtp_errors.SMTPSenderRefused):
        return cls(553, "5.1.8 bad sender", "a@example.com")
    if issubclass(cls, smtp_errors.SMTPResponseException):
        return cls(451, "4.3.0 try again")
    if issubclass(cls, smtp_errors.SMTPRecipientsRefused):
        return cls([smtp_errors.SMTPRecipientRefused(550, "no", "x@example.org")])
    return cls("something went wrong")


def test_the_error_module_has_the_classes_we_expect() -> None:
    assert len(_all_aiosmtplib_errors()) >= 14


@pytest.mark.parametrize("cls", _all_aiosmtplib_errors(), ids=lambda c: c.__name__)
def test_every_aiosmtplib_error_maps_to_a_delivery_error(cls: type[BaseException]) -> None:
    mapped = map_error(_instance(cls), Phase.MAIL)
    assert isinstance(mapped, asyncmail.DeliveryError)
    assert type(mapped) is not asyncmail.DeliveryError  # always a specific class
    assert isinstance(mapped.retryable, bool)


def test_reply_errors_are_classified_by_code_not_by_class() -> None:
    temporary = map_error(smtp_errors.SMTPDataError(451, "4.3.0 later"), Phase.DATA)
    permanent = map_error(smtp_errors.SMTPDataError(554, "5.6.0 no"), Phase.DATA)
    assert isinstance(temporary, asyncmail.TemporaryFailure) and temporary.retryable
    assert isinstance(permanent, asyncmail.Rejected) and not permanent.retryable
    assert permanent.code == 554
    assert permanent.enhanced_code == "5.6.0"
    assert permanent.phase is Phase.DATA


def test_authentication_failures_are_permanent_authentication_errors() -> None:
    mapped = map_error(smtp_errors.SMTPAuthenticationError(535, "5.7.8 bad creds"), Phase.AUTH)
    assert isinstance(mapped, asyncmail.AuthenticationError)
    assert mapped.phase is Phase.AUTH


def test_certificate_failures_are_tls_errors() -> None:
    cause = ssl.SSLCertVerificationError("certificate verify failed")
    exc = smtp_errors.SMTPConnectError("Error connecting")
    exc.__cause__ = cause
    assert isinstance(map_error(exc, Phase.GREETING), asyncmail.TLSError)


def test_connection_refused_is_a_transient_connect_error() -> None:
    mapped = map_error(ConnectionRefusedError(111, "refused"), Phase.CONNECT)
    assert isinstance(mapped, asyncmail.ConnectError)
    assert mapped.retryable


def test_error_text_names_code_phase_recipient_and_retryability() -> None:
    mapped = map_error(
        smtp_errors.SMTPRecipientRefused(550, "5.1.1 unknown", "b@x.org"), Phase.RCPT
    )
    text = str(mapped)
    assert "550" in text and "rcpt" in text and "b@x.org" in text and "retryable=False" in text
