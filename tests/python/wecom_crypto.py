"""wechatpy's WeCom (enterprise) callback crypto, driven by Siyu's interoperability tests.

    wecom_crypto.py encrypt TOKEN KEY CORP_ID NONCE TIMESTAMP   (message on stdin) -> envelope XML
    wecom_crypto.py decrypt TOKEN KEY CORP_ID SIGNATURE TIMESTAMP NONCE  (envelope XML on stdin) -> message
"""
import sys

from wechatpy.enterprise.crypto import WeChatCrypto


def main():
    mode, token, key, corp_id = sys.argv[1:5]
    crypto = WeChatCrypto(token, key, corp_id)
    data = sys.stdin.read()
    if mode == "encrypt":
        nonce, timestamp = sys.argv[5:7]
        sys.stdout.write(crypto.encrypt_message(data, nonce, timestamp))
    elif mode == "decrypt":
        signature, timestamp, nonce = sys.argv[5:8]
        sys.stdout.write(crypto.decrypt_message(data, signature, timestamp, nonce))
    else:
        sys.exit("unknown mode " + mode)


if __name__ == "__main__":
    main()
