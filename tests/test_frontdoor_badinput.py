import imaplib, socket, time
from proxyenv import Daemon

def rd(s, until, timeout=10):
    s.settimeout(timeout); buf=b""
    end=time.monotonic()+timeout
    while until not in buf and time.monotonic()<end:
        try: c=s.recv(65536)
        except socket.timeout: break
        if not c: break
        buf+=c
    return buf

def test_x(tmp_path, dovecot_pair):
    with Daemon(tmp_path, dovecot_pair) as d:
        for i, line in enumerate([b'a LOGIN "alice@example.com" "p\xc3\xa4ss"', b'b LOGIN {2}\r\n\xc3\xa4@example.com pw',
                     b'c LOGIN "\xc3\xa4@example.com" pw', b'd LOGIN a\xffb@example.com pw', b'e LOGIN "alice@example.com" {3}\r\n\x00\x01\x02']):
            s = socket.create_connection(("127.0.0.1", d.imap_port), timeout=10)
            rd(s, b"\r\n")
            s.sendall(line + b"\r\n")
            print(rd(s, b"abcde"[i:i+1] + b" ", 10))
            s.close()
        time.sleep(0.3)
        print(d.log()[-5000:])
