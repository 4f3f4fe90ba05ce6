# spfgate-dnscheck: the DNS self-check of a site.
