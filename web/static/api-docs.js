// Draws the API's documentation from the observatory's own OpenAPI description.
window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true});
