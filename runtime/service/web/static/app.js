/* Sluiceway dashboard: forms and buttons (actions through the JSON API, with the CSRF token). */
"use strict";
