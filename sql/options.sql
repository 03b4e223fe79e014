-- Option validation of the posthog_export foreign data wrapper
CREATE EXTENSION posthog_export;

-- a server needs url and project_id
CREATE SERVER s_none FOREIGN DATA WRAPPER posthog_export;
CREATE SERVER s_nourl FOREIGN DATA WRAPPER posthog_export OPTIONS (project_id '1');
CREATE SERVER s_noproj FOREIGN DATA WRAPPER posthog_export OPTIONS (url 'https://us.posthog.com');

-- unknown options are rejected with the list of valid ones
CREATE SERVER s_bad FOREIGN DATA WRAPPER posthog_export
  OPTIONS (url 'https://us.posthog.com', project_id '1', api_key 'phx_in_the_wrong_place');
CREATE SERVER s_bad FOREIGN DATA WRAPPER posthog_export
  OPTIONS (url 'https://us.posthog.com', project_id '1', pagesize '10');

-- malformed values
CREATE SERVER s_bad FOREIGN DATA WRAPPER posthog_export OPTIONS (url 'us.posthog.com', project_id '1');
CREATE SERVER s_bad FOREIGN DATA WRAPPER posthog_export OPTIONS (url 'ftp://us.posthog.com', project_id '1');
CREATE SERVER s_bad FOREIGN DATA WRAPPER posthog_export OPTIONS (url 'https://', project_id '1');
CREATE SERVER s_bad FOREIGN DATA WRAPPER posthog_export OPTIONS (url 'https://user:pw@us.posthog.com', project_id '1');
CREATE SERVER s_bad FOREIGN DATA WRAPPER posthog_export OPTIONS (url 'https://us.posthog.com/?x=1', project_id '1');
-- the API path is ours to add: a URL with /api/ in it is a mistake (a 404 at every request)
CREATE SERVER s_bad FOREIGN DATA WRAPPER posthog_export OPTIONS (url 'https://us.posthog.com/api/projects/1/query/', project_id '1');
CREATE SERVER s_bad FOREIGN DATA WRAPPER posthog_export OPTIONS (url 'https://us.posthog.com/api', project_id '1');
-- a self-hosted PostHog under a path prefix is fine
CREATE SERVER s_prefix FOREIGN DATA WRAPPER posthog_export OPTIONS (url 'https://example.com/posthog/', project_id '1');
DROP SERVER s_prefix;
CREATE SERVER s_bad FOREIGN DATA WRAPPER posthog_export OPTIONS (url 'https://us.posthog.com', project_id 'abc');
CREATE SERVER s_bad FOREIGN DATA WRAPPER posthog_export OPTIONS (url 'https://us.posthog.com', project_id '0');
CREATE SERVER s_bad FOREIGN DATA WRAPPER posthog_export OPTIONS (url 'https://us.posthog.com', project_id '1', page_size '50001');
CREATE SERVER s_bad FOREIGN DATA WRAPPER posthog_export OPTIONS (url 'https://us.posthog.com', project_id '1', page_size '0');
-- PostHog's request budget: at least one request an hour, one at a time
CREATE SERVER s_bad FOREIGN DATA WRAPPER posthog_export OPTIONS (url 'https://us.posthog.com', project_id '1', requests_per_hour '0');
CREATE SERVER s_bad FOREIGN DATA WRAPPER posthog_export OPTIONS (url 'https://us.posthog.com', project_id '1', max_concurrent_requests '0');
CREATE SERVER s_bad FOREIGN DATA WRAPPER posthog_export OPTIONS (url 'https://us.posthog.com', project_id '1', max_concurrent_requests '101');
CREATE SERVER s_bad FOREIGN DATA WRAPPER posthog_export OPTIONS (url 'https://us.posthog.com', project_id '1', allow_http 'maybe');
CREATE SERVER s_bad FOREIGN DATA WRAPPER posthog_export OPTIONS (url 'https://us.posthog.com', project_id '1', ca_file 'relative/ca.pem');
CREATE SERVER s_bad FOREIGN DATA WRAPPER posthog_export OPTIONS (url 'https://us.posthog.com', project_id '1', timeout '-1');

CREATE SERVER s_bad FOREIGN DATA WRAPPER posthog_export OPTIONS (url 'https://us.posthog.com', project_id '1', verify 'partly');
CREATE SERVER s_bad FOREIGN DATA WRAPPER posthog_export OPTIONS (url 'https://us.posthog.com', project_id '1', proxy 'socks5://p:1080');
CREATE SERVER s_bad FOREIGN DATA WRAPPER posthog_export OPTIONS (url 'https://us.posthog.com', project_id '1', client_key 'key.pem');
CREATE SERVER s_bad FOREIGN DATA WRAPPER posthog_export OPTIONS (url 'https://us.posthog.com', project_id '1', allow_loopback 'yes please');

-- plain http only with allow_http
CREATE SERVER s_http FOREIGN DATA WRAPPER posthog_export OPTIONS (url 'http://127.0.0.1:8000', project_id '1');
CREATE SERVER s_http FOREIGN DATA WRAPPER posthog_export OPTIONS (url 'http://127.0.0.1:8000', project_id '1', allow_http 'true');
-- ... and dropping allow_http later is refused while the url is http
ALTER SERVER s_http OPTIONS (DROP allow_http);

-- a valid server with every option
CREATE SERVER posthog_us FOREIGN DATA WRAPPER posthog_export
  OPTIONS (url 'https://us.posthog.com/', project_id '12345', ca_file '/etc/ssl/certs/ca-certificates.crt',
           page_size '50000', connect_timeout '5', timeout '120', max_retries '3',
           retry_base_delay '500', max_response_size '104857600', compression 'false',
           requests_per_hour '2400', max_concurrent_requests '3',
           verify 'ca', client_cert '/etc/posthog/client.pem', client_key '/etc/posthog/client.key',
           proxy 'http://proxy.internal:3128', allow_loopback 'false');
ALTER SERVER posthog_us OPTIONS (SET page_size '1000');
ALTER SERVER posthog_us OPTIONS (ADD nonsense 'x');
ALTER SERVER posthog_us OPTIONS (DROP url);

-- user mappings hold api_key and nothing else
CREATE USER MAPPING FOR CURRENT_USER SERVER posthog_us;
CREATE USER MAPPING FOR CURRENT_USER SERVER posthog_us OPTIONS (api_key '');
CREATE USER MAPPING FOR CURRENT_USER SERVER posthog_us OPTIONS (api_key 'phx_x', url 'https://eu.posthog.com');
-- control characters in any value are refused, and a key is never printed
CREATE USER MAPPING FOR CURRENT_USER SERVER posthog_us OPTIONS (api_key E'phx_regress_secret\r\nX-Injected: 1');
CREATE USER MAPPING FOR CURRENT_USER SERVER posthog_us OPTIONS (api_key E'phx_regress_secret\n');
CREATE USER MAPPING FOR CURRENT_USER SERVER posthog_us OPTIONS (api_key E'phx_regress\tsecret');
CREATE USER MAPPING FOR CURRENT_USER SERVER posthog_us OPTIONS (api_key E'phx_regress_secret\x7f');
ALTER SERVER posthog_us OPTIONS (SET client_cert E'/etc/posthog/client.pem\nx');
ALTER SERVER posthog_us OPTIONS (SET page_size E'100\r');
ALTER SERVER posthog_us OPTIONS (SET proxy E'http://proxy.internal:3128\u0001');
CREATE USER MAPPING FOR CURRENT_USER SERVER posthog_us OPTIONS (api_key 'phx_regress_secret');

-- no options on the wrapper itself
ALTER FOREIGN DATA WRAPPER posthog_export OPTIONS (ADD url 'https://us.posthog.com');

SELECT srvname, srvoptions FROM pg_foreign_server ORDER BY srvname;
