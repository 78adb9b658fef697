/* Sluiceway dashboard: live updates over server-sent events (/api/stream). */
"use strict";
