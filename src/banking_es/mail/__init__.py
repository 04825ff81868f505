"""Mail to users (password reset, password changed, login locked): a durable queue of its
own, sent over SMTP by one elected sender (`sender.MailSender`), apart from the event outbox."""
