"""``asyncmail relay``: a local SMTP relay that queues every message durably, then delivers it.

It accepts mail with aiosmtpd, answers 250 only once the message is committed to an outbox,
and delivers from that outbox through a Mailer (pipelining, retries, the shared rate limit).
"""
