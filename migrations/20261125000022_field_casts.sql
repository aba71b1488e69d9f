-- Segment conditions on typed custom fields compared `(fields ->> key)::numeric` (or
-- ::boolean, ::date). One value that does not cast, written outside Loopline (by SQL,
-- say), made every query of such a segment fail: its count, its list, its sends. These
-- casts give NULL instead, so such a value matches no condition, like an absent one.
-- The usual values take an inline path (a JSON number, a JSON boolean); anything else
-- goes through a PL/pgSQL cast that catches the error, so only odd values pay for its
-- subtransaction. (Dates are read with a silent jsonpath `datetime()` in the query.)

CREATE FUNCTION field_cast_numeric(t text) RETURNS numeric
    LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
BEGIN
    RETURN t::numeric;
EXCEPTION WHEN data_exception THEN
    RETURN NULL;
END $$;

CREATE FUNCTION field_cast_boolean(t text) RETURNS boolean
    LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
BEGIN
    RETURN t::boolean;
EXCEPTION WHEN data_exception THEN
    RETURN NULL;
END $$;

-- SQL functions, inlined into the segment's query.
CREATE FUNCTION field_numeric(v jsonb) RETURNS numeric
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN jsonb_typeof(v) = 'number' THEN v::numeric
                ELSE field_cast_numeric(v #>> '{}') END
$$;

CREATE FUNCTION field_boolean(v jsonb) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE v WHEN 'true' THEN true WHEN 'false' THEN false
                  ELSE field_cast_boolean(v #>> '{}') END
$$;
