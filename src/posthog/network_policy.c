/*-------------------------------------------------------------------------
 *
 * network_policy.c
 *		Which addresses a request to PostHog may connect to (the SSRF
 *		policy), and the error for an address it refuses.
 *
 * With allow_loopback 'false' (the default) no connection goes to this
 * machine or its link: see address_is_local().  http_transport.c asks
 * here for every connection libcurl opens or reuses, and before a request
 * goes to a proxy, which connects out of this backend's sight.
 *
 * The checks run inside libcurl callbacks and never throw; only
 * phx_policy_check_proxied_url() and phx_policy_report_refused(), called
 * outside libcurl, raise errors.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <curl/curl.h>

#include "posthog/posthog.h"

/*
 * The SSRF policy: whether connecting to this address (an in_addr or an
 * in6_addr) reaches this machine or its link.  That is: loopback; the
 * unspecified addresses, 0.0.0.0/8 and :: (a connect() to them reaches the
 * local host); link-local, 169.254.0.0/16 and fe80::/10 (a cloud's metadata
 * service lives there); and every address of this host's own interfaces (a
 * connection to the host's own address reaches its listeners on 0.0.0.0
 * just as well as one to 127.0.0.1).  An IPv6 spelling of an IPv4 address,
 * IPv4-mapped ::ffff:a.b.c.d, IPv4-compatible ::a.b.c.d or NAT64's
 * 64:ff9b::a.b.c.d, is judged by the IPv4 address it carries.
 *
 * Private networks (10/8, fc00::/7 ...) are not "this machine" and are
 * allowed: a self-hosted PostHog lives there.  If the interfaces cannot be
 * listed, the address counts as local (the policy fails closed) and *err is
 * set.  Runs inside libcurl callbacks: never throws.
 */
static bool
address_is_local(int family, const void *addr, int *err)
{
	static const uint8 nat64_prefix[12] = {0x00, 0x64, 0xff, 0x9b};
	struct ifaddrs *ifs;
	uint32		v4 = 0;
	bool		local = false;

	*err = 0;
	if (family == AF_INET6)
	{
		const struct in6_addr *a6 = (const struct in6_addr *) addr;

		if (IN6_IS_ADDR_UNSPECIFIED(a6) || IN6_IS_ADDR_LOOPBACK(a6) || IN6_IS_ADDR_LINKLOCAL(a6))
			return true;
		if (IN6_IS_ADDR_V4MAPPED(a6) || IN6_IS_ADDR_V4COMPAT(a6) ||
			memcmp(a6->s6_addr, nat64_prefix, sizeof(nat64_prefix)) == 0)
		{
			memcpy(&v4, &a6->s6_addr[12], sizeof(v4));
			family = AF_INET;
		}
	}
	else if (family == AF_INET)
		memcpy(&v4, &((const struct in_addr *) addr)->s_addr, sizeof(v4));
	else
		return true;			/* not an IP address: nothing to connect to */

	if (family == AF_INET)
	{
		uint32		a = ntohl(v4);

		if ((a >> 24) == 0 || (a >> 24) == 127 || (a >> 16) == 0xA9FE)
			return true;
	}

	if (getifaddrs(&ifs) != 0)
	{
		*err = errno ? errno : EIO;
		return true;
	}
	for (struct ifaddrs *i = ifs; i != NULL && !local; i = i->ifa_next)
	{
		if (i->ifa_addr == NULL || i->ifa_addr->sa_family != family)
			continue;
		if (family == AF_INET)
			local = ((struct sockaddr_in *) i->ifa_addr)->sin_addr.s_addr == v4;
		else
			local = memcmp(&((struct sockaddr_in6 *) i->ifa_addr)->sin6_addr, addr,
						   sizeof(struct in6_addr)) == 0;
	}
	freeifaddrs(ifs);
	return local;
}

/* Starts the policy of one request. */
void
phx_policy_reset(PhxNetPolicy *policy, bool allow_loopback)
{
	policy->allow_loopback = allow_loopback;
	policy->refused_address[0] = '\0';
	policy->policy_errno = 0;
}

/*
 * Applies the policy for one connection: true if it may go ahead; if not,
 * the refused address is kept in the policy for the error message.
 */
static bool
policy_allows(PhxNetPolicy *policy, int family, const void *addr)
{
	int			err;

	if (policy->allow_loopback)
		return true;
	if (!address_is_local(family, addr, &err))
		return true;
	if ((family != AF_INET && family != AF_INET6) ||
		inet_ntop(family, addr, policy->refused_address, sizeof(policy->refused_address)) == NULL)
		snprintf(policy->refused_address, sizeof(policy->refused_address),
				 "(address family %d)", family);
	policy->policy_errno = err;
	return false;
}

/*
 * For a new connection (to PostHog, or to the proxy), on the address
 * actually connected to, after name resolution: a host name that resolves
 * to a refused address is caught as well, and no packet is sent.  An
 * address that is allowed forgets an earlier refusal: another address of
 * the same name being refused is then not the error.
 */
bool
phx_policy_allows_sockaddr(PhxNetPolicy *policy, int family, const struct sockaddr *sa)
{
	const void *addr = NULL;

	if (family == AF_INET)
		addr = &((const struct sockaddr_in *) sa)->sin_addr;
	else if (family == AF_INET6)
		addr = &((const struct sockaddr_in6 *) sa)->sin6_addr;
	if (!policy_allows(policy, family, addr))
		return false;
	policy->refused_address[0] = '\0';
	policy->policy_errno = 0;
	return true;
}

/*
 * For a connection libcurl reuses, given by the text of its address: one
 * kept alive for a server with allow_loopback 'true' must not carry the
 * request of a server without it.  An address that cannot be read is
 * refused.
 */
bool
phx_policy_allows_ip(PhxNetPolicy *policy, const char *conn_ip)
{
	char		ip[INET6_ADDRSTRLEN + 1];
	struct in6_addr a6;
	struct in_addr a4;

	if (policy->allow_loopback)
		return true;
	strlcpy(ip, conn_ip ? conn_ip : "", sizeof(ip));
	ip[strcspn(ip, "%")] = '\0';	/* an IPv6 zone id */
	if (inet_pton(AF_INET, ip, &a4) == 1)
		return policy_allows(policy, AF_INET, &a4);
	if (inet_pton(AF_INET6, ip, &a6) == 1)
		return policy_allows(policy, AF_INET6, &a6);
	strlcpy(policy->refused_address, ip[0] ? ip : "(unknown)", sizeof(policy->refused_address));
	return false;
}

/* The error for an address the SSRF policy refused (see address_is_local()). */
void
phx_policy_report_refused(PhxServerConfig *cfg, const char *address, int policy_errno,
						  bool via_proxy)
{
	if (policy_errno != 0)
	{
		errno = policy_errno;
		ereport(ERROR,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("could not list the network addresses of this host to check address %s of PostHog server \"%s\": %m",
						address, cfg->server_name),
				 errdetail("With allow_loopback 'false', connections to this host's own addresses are refused, so without the list no connection is made.")));
	}
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("refusing to connect PostHog server \"%s\" to local address %s",
					cfg->server_name, address),
			 via_proxy ?
			 errdetail("The url names a loopback, unspecified or link-local address, or one of this host's; the proxy would connect to its own such address (or to its cloud's metadata service)."):
			 errdetail("Loopback, unspecified and link-local addresses, and this host's own addresses, are refused, so an export cannot be pointed at services of the database host or at its cloud's metadata service."),
			 errhint("Set the server option allow_loopback 'true' for a PostHog (or proxy) running on this host.")));
	pg_unreachable();
}

/*
 * With a proxy, the proxy connects to the URL's host, out of this backend's
 * sight.  A URL whose host is an address literal that the policy refuses
 * (http://169.254.169.254, the metadata service of the proxy's own cloud)
 * is refused before the request goes out.  A host name is resolved by the
 * proxy, and cannot be checked here.
 */
void
phx_policy_check_proxied_url(PhxServerConfig *cfg, const char *url)
{
	CURLU	   *u;
	char	   *host = NULL;

	if (cfg->allow_loopback || cfg->proxy == NULL)
		return;
	if ((u = curl_url()) == NULL)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	/* libcurl's own parser, so the host is the one libcurl sends the proxy */
	if (curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
		curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK)
	{
		char		lit[INET6_ADDRSTRLEN + 1];
		size_t		n = strlen(host);
		struct in6_addr a6;
		struct in_addr a4;
		int			family = 0;
		void	   *addr = NULL;
		int			err = 0;

		if (n >= 2 && host[0] == '[' && host[n - 1] == ']')
			strlcpy(lit, host + 1, Min(n - 1, sizeof(lit)));
		else
			strlcpy(lit, host, sizeof(lit));
		if (inet_pton(AF_INET, lit, &a4) == 1)
		{
			family = AF_INET;
			addr = &a4;
		}
		else if (inet_pton(AF_INET6, lit, &a6) == 1)
		{
			family = AF_INET6;
			addr = &a6;
		}
		curl_free(host);
		if (family != 0 && address_is_local(family, addr, &err))
		{
			curl_url_cleanup(u);
			phx_policy_report_refused(cfg, lit, err, true);
		}
	}
	curl_url_cleanup(u);
}
