"""Address helpers for the common role's firewall (no netaddr needed on the controller)."""

import ipaddress

from ansible.errors import AnsibleFilterError


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


def _network(text, where):
    try:
        return str(ipaddress.ip_network(str(text).strip(), strict=False))
    except ValueError:
        raise AnsibleFilterError(
            f"{where}: {text!r} is not an IP address or CIDR; the firewall admits addresses, "
            "so set ansible_host (or the entry's sources) to one."
        ) from None


def common_firewall_resolve(entries, groups, hostvars, admin_sources):
    """Each port entry with its final source list.

    ENTRIES are the host's port entries (defaults applied); sources come from the entry's
    CIDRs, the ansible_host of every host in its source_groups and, for `admin: true`,
    ADMIN_SOURCES. `anywhere` is true only for an entry that names no source of any kind, so
    an entry whose groups are empty stays closed instead of opening to everyone.
    """
    resolved = []
    for entry in entries:
        named = entry.get("source_groups") or []
        admin = bool(entry.get("admin", False))
        sources = {_network(s, f"port {entry['port']} sources") for s in entry.get("sources") or []}
        for group in named:
            for name in groups.get(group, []):
                address = hostvars[name].get("ansible_host", name)
                sources.add(_network(address, f"host {name} (group {group})"))
        if admin:
            sources |= {_network(s, "common_firewall_admin_sources") for s in admin_sources or []}
        anywhere = not entry.get("sources") and not named and not admin
        resolved.append({**entry, "sources": sorted(sources), "anywhere": anywhere})
    return resolved


class FilterModule:
    """Filters used by roles/common."""

    def filters(self):
        return {
            "common_address_in_networks": common_address_in_networks,
            "common_firewall_resolve": common_firewall_resolve,
        }
