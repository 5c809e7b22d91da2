"""The `pebble` fixture itself (tests/pebble.py): a real ACME CA is up and answers."""


def test_directory_offers_new_order(pebble):
    d = pebble.directory_json()
    assert d["newOrder"].startswith(f"https://localhost:{pebble.port}/")
    assert pebble.ca_root.read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert len({pebble.port, pebble.mgmt_port, pebble.http_port, pebble.tls_port}) == 4


def test_roots_pem_is_a_certificate(pebble):
    root = pebble.roots_pem()
    assert root.startswith("-----BEGIN CERTIFICATE-----") and root.rstrip().endswith("-----END CERTIFICATE-----")
    both = pebble.roots_pem(with_intermediate=True)
    assert both.count("BEGIN CERTIFICATE") == 2
    assert pebble.orders() >= 0


def test_stop_and_start_simulate_a_ca_outage(pebble):
    import urllib.error

    pebble.stop()
    try:
        pebble.directory_json()
        raise AssertionError("the directory answered while pebble was stopped")
    except (urllib.error.URLError, OSError):
        pass
    finally:
        pebble.start()
    assert "newOrder" in pebble.directory_json()
