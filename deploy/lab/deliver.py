#!/usr/bin/env python3
"""deliver.py PORT STORE FIRST LAST — sample mail for the lab users.

One LMTP session for all users: spawning swaks per message would take most of
the lab's start-up time.
"""
import smtplib
import sys
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

port, store, first, last = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
lmtp = smtplib.LMTP("127.0.0.1", port)
for i in range(first, last + 1):
    rcpt = "user%04d@example.org" % i
    subjects = ["Welcome to the %s store" % store, "Lab message 2", "Lab message 3"]
    for n, subject in enumerate(subjects):
        msg = EmailMessage()
        msg["From"] = "lab@example.org"
        msg["To"] = rcpt
        msg["Subject"] = subject
        msg["Date"] = formatdate(localtime=True)
        msg["Message-ID"] = make_msgid(domain="lab.example.org")
        msg.set_content("Sample message %d for %s on the %s store.\n" % (n + 1, rcpt, store))
        lmtp.send_message(msg, from_addr="lab@example.org", to_addrs=[rcpt])
lmtp.quit()
print("delivered %d messages to the %s store" % (3 * (last - first + 1), store))
