/*-------------------------------------------------------------------------
 *
 * pg_jsonb_ref.c
 *		The jsonb fuzzer's reference: PostgreSQL's own jsonb.c, built in
 *		from the server sources pg_source.sh fetched, with a way in to its
 *		static jsonb_from_cstring() (the body of jsonb_in and jsonb_recv).
 *
 *-------------------------------------------------------------------------
 */
#include "jsonb.c"

extern Jsonb *fuzz_ref_jsonb(char *json, int len);
extern char *fuzz_jsonb_to_text(Jsonb *jb);

/* what jsonb_in(json) builds, json being len bytes (jsonb_recv's way) */
Jsonb *
fuzz_ref_jsonb(char *json, int len)
{
	return (Jsonb *) DatumGetPointer(jsonb_from_cstring(json, len));
}

/* jsonb_out's text, for reports */
char *
fuzz_jsonb_to_text(Jsonb *jb)
{
	return JsonbToCString(NULL, &jb->root, VARSIZE(jb));
}
