"""Address checks for the common role's lock-out guard (no netaddr needed on the controller)."""

import ipaddress


def common_address_in_networks(address, networks):
    """True when ADDRESS lies in any of NETWORKS (CIDRs or single addresses).

    An empty NETWORKS list means "from anywhere" and is always true. An IPv4 client seen
    through an IPv6 socket (::ffff:a.b.c.d) is compared as IPv4, the way nftables sees it.
    """
    if not networks:
        return True
    ip = ipaddress.ip_address(str(address).split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for network in networks:
        net = ipaddress.ip_network(str(network), strict=False)
        if ip.version == net.version and ip in net:
            return True
    return False


class FilterModule:
    """Filters used by roles/common."""

    def filters(self):
        return {"common_address_in_networks": common_address_in_networks}
