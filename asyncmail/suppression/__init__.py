"""The suppression list: addresses not to send to again (hard bounces, complaints, opt-outs)."""
